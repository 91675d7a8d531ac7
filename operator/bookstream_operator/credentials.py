"""The Redis credentials the operator itself uses: the only Secret data it ever reads.

A LibraryInstance names a Secret; whoever may create one could otherwise make the operator
read any Secret its RBAC reaches and send it to a Redis of their choice. So the operator
reads a Secret only

* in the LibraryInstance's own namespace (a reference has no namespace field), and
* when the Secret carries the label ``bookstream.io/redis-credentials: "true"``.

RBAC cannot grant ``get`` by label, so the label is checked first on the Secret's metadata
alone (a GET answered as ``PartialObjectMetadata``: an unlabelled Secret's data never
leaves the API server), and again on the full object before its data is used. Of a role
Secret (``usersSecretRef``) only the key ``operator`` is decoded; the workers' keys are
mounted into their pods as files by the kubelet, never read here.

Every problem is a :class:`CredentialsError` whose reason becomes the ``Ready`` condition's
and whose message says what to do; no message carries a Secret's value.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

import httpx2
from bookstream_core.roles import user_name

from bookstream_operator import naming
from bookstream_operator.kube import Kube
from bookstream_operator.spec import LibrarySpec

#: The label a Secret needs before the operator reads it.
LABEL = f"{naming.GROUP}/redis-credentials"
#: The key of a role Secret the operator reads (its own ACL user's password).
OPERATOR_KEY = "operator"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who the operator is in Redis: ``user=None`` is Redis' default user."""

    user: str | None = None
    #: Kept out of repr: a logged or printed object must not show it.
    password: str | None = field(default=None, repr=False)


class CredentialsError(Exception):
    """The credentials cannot be had; ``reason`` is the Ready condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def operator_credentials(kube: Kube, namespace: str, spec: LibrarySpec) -> Credentials:
    """The user and password the operator connects to this library's Redis with."""
    redis = spec.redis
    if redis.users_secret is not None:
        where = "spec.redis.usersSecretRef"
        password = await read_key(kube, namespace, redis.users_secret, OPERATOR_KEY, where)
        return Credentials(user_name(spec.library, "operator"), password)
    if redis.password_secret is not None:
        ref = redis.password_secret
        where = "spec.redis.passwordSecretRef"
        return Credentials(None, await read_key(kube, namespace, ref.name, ref.key, where))
    return Credentials()


def _missing(namespace: str, name: str, where: str) -> CredentialsError:
    return CredentialsError(
        "SecretNotFound",
        f"Secret {namespace}/{name} ({where}) does not exist; the operator looks for it in "
        "the LibraryInstance's own namespace only",
    )


def _unlabelled(namespace: str, name: str, where: str) -> CredentialsError:
    # No ready-made `kubectl label` for the Secret named: it may hold other passwords (the
    # chart's Redis admin Secret, another application's), and the label is what lets the
    # operator send a password to the URL's Redis and the workers mount it.
    meant = (
        "bookstream's role passwords for this library (keys lending, shelving, client, "
        "viewer, operator)"
        if where.endswith("usersSecretRef")
        else "the one password meant for this library"
    )
    return CredentialsError(
        "SecretNotLabelled",
        f"Secret {namespace}/{name} ({where}) is not labelled {LABEL}=true, and the operator "
        f"reads only Secrets so labelled. Label a Secret only if it holds nothing but "
        f"{meant}, never one that holds an admin's or another application's password: the "
        "operator sends what it reads to spec.redis.url's Redis and the workers mount it. "
        "Otherwise put what is meant for this library in a Secret of its own, label that "
        "one and name it here",
    )


def _forbidden(namespace: str, name: str, exc: httpx2.HTTPStatusError) -> CredentialsError:
    try:
        detail = str(exc.response.json().get("message") or "")
    except ValueError:
        detail = ""
    return CredentialsError(
        "SecretForbidden",
        f"the operator may not read Secret {namespace}/{name} (HTTP 403"
        + (f": {detail}" if detail else "")
        + f"): grant its ServiceAccount get on that Secret in namespace {namespace} with a "
        'Role and RoleBinding (operator/README.md, "Which Secrets the operator reads"); '
        "a cluster-wide chart install can list the namespace in operator.secretNamespaces",
    )


async def read_key(kube: Kube, namespace: str, name: str, key: str, where: str) -> str:
    """One key of a labelled Secret in ``namespace``, decoded; :class:`CredentialsError`
    otherwise (404, 403 and a missing label included)."""
    try:
        labels = await kube.secret_labels(namespace, name)
        if labels is None:
            raise _missing(namespace, name, where)
        if labels.get(LABEL) != "true":
            raise _unlabelled(namespace, name, where)
        found = await kube.secret_data(namespace, name)
    except httpx2.HTTPStatusError as exc:
        if exc.response.status_code == 403:
            raise _forbidden(namespace, name, exc) from None
        raise
    if found is None:
        raise _missing(namespace, name, where)
    labels, data = found
    if labels.get(LABEL) != "true":  # the label went between the two reads
        raise _unlabelled(namespace, name, where)
    if key not in data:
        raise CredentialsError(
            "SecretKeyMissing", f"Secret {namespace}/{name} ({where}) has no key {key!r}"
        )
    try:
        value = base64.b64decode(data[key], validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        value = ""
    if not value:
        raise CredentialsError(
            "SecretKeyInvalid",
            f"Secret {namespace}/{name} key {key!r} is not a password (empty or not UTF-8)",
        )
    return value
