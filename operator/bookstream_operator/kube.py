"""The few Kubernetes calls the operator makes besides kopf's own (see README "RBAC").

lightkube (async, typed) applies the owned objects with server-side apply under the
field manager ``bookstream-operator``: idempotent, level-based, and it removes fields
this manager stopped setting. Reading the LibraryInstance, writing its status and
posting events is left to kopf.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx2
from lightkube import AsyncClient, KubeConfig, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from bookstream_operator import naming
from bookstream_operator.claim import HolderUnknown
from bookstream_operator.types import Manifest

T = TypeVar("T")
#: Attempts per call when the connection fails under it (e.g. the server closed a pooled
#: keep-alive connection): a new connection is opened for the next attempt.
ATTEMPTS = 3


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await call()
        except httpx2.TransportError:
            if attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")


#: The Accept header that makes a GET return only the object's metadata.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

LibraryInstance = create_namespaced_resource(
    naming.GROUP, naming.VERSION, naming.KIND, naming.PLURAL
)


@dataclass(frozen=True, slots=True)
class WorkloadState:
    replicas: int
    ready: int
    updated: int


def _checked(namespace: str, name: str) -> None:
    """Refuse what is no namespace or object name before it becomes a request path: the
    HTTP client would resolve "../" (or cut at "?") and ask for another object, e.g. a
    Secret of another namespace, than the one named."""
    if not (naming.is_namespace(namespace) and naming.is_object_name(name)):
        raise ValueError(f"not a Kubernetes namespace and name: {namespace!r}, {name!r}")


def _status_code(exc: httpx2.HTTPStatusError) -> int:
    # lightkube turns only "application/json" answers into ApiError; match both.
    return exc.response.status_code


class Kube:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    @classmethod
    def from_env(cls) -> Kube:
        """In-cluster service account, else ``$KUBECONFIG`` / ``~/.kube/config``."""
        return cls(AsyncClient(KubeConfig.from_env(), field_manager=naming.FIELD_MANAGER))

    async def close(self) -> None:
        await self.client.close()

    async def apply(self, manifest: Manifest) -> None:
        """Server-side apply; create when the server answers 404 to an apply.

        A real API server creates on apply; the create fallback serves API servers
        (and test doubles such as KMock) that only patch existing objects.
        """
        obj: Any = codecs.from_dict(manifest)
        try:
            await _retrying(
                lambda: self.client.apply(obj, field_manager=naming.FIELD_MANAGER, force=True)
            )
        except httpx2.HTTPStatusError as exc:
            if _status_code(exc) != 404:
                raise
            await _retrying(lambda: self.client.create(obj))

    async def read_instance(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The LibraryInstance as it is now (``None`` once it is gone)."""
        _checked(namespace, name)
        try:
            obj = await _retrying(
                lambda: self.client.get(LibraryInstance, name, namespace=namespace)
            )
        except httpx2.HTTPStatusError as exc:
            if _status_code(exc) == 404:
                return None
            raise
        return dict(obj.to_dict())  # type: ignore[no-untyped-call]

    async def instance_uid(self, namespace: str, name: str) -> str | None:
        """The uid of a LibraryInstance (``None`` if absent); raises ``claim.HolderUnknown`` when
        the operator may not read it (e.g. a namespace it does not watch)."""
        if not (naming.is_namespace(namespace) and naming.is_object_name(name)):
            # The claim's holder comes from Redis: no object can have such a name (an
            # older operator's claim had none).
            return None
        try:
            obj = await self.read_instance(namespace, name)
        except httpx2.HTTPStatusError as exc:
            raise HolderUnknown(f"{namespace}/{name}: HTTP {_status_code(exc)}") from None
        if obj is None:
            return None
        return str((obj.get("metadata") or {}).get("uid") or "") or None

    async def patch_status(self, namespace: str, name: str, status: Manifest) -> None:
        """A JSON merge patch of ``status`` (a null removes a key) on the status subresource.

        A LibraryInstance deleted meanwhile has no status to write: that is not an error.
        """
        _checked(namespace, name)
        try:
            await _retrying(
                lambda: self.client.patch(
                    LibraryInstance.Status,
                    name,
                    {"status": status},
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                )
            )
        except httpx2.HTTPStatusError as exc:
            if _status_code(exc) != 404:
                raise

    async def post_event(
        self, instance: Manifest, type_: str, reason: str, message: str, now: str
    ) -> None:
        """A core/v1 Event about the LibraryInstance (what ``kubectl describe`` shows).

        Posted here rather than with ``kopf.event``: the resync task runs outside kopf's
        handler context, where kopf's event queue does not exist. Best effort: an event
        that cannot be posted is not worth failing a pass for.
        """
        meta = instance.get("metadata") or {}
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": naming.API_VERSION,
                "kind": naming.KIND,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": naming.FIELD_MANAGER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        with contextlib.suppress(httpx2.HTTPError):
            await _retrying(lambda: self.client.create(codecs.from_dict(event)))

    async def secret_labels(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's labels (``None`` if it does not exist), fetched without its data: the
        API server answers with the object's metadata only (``PartialObjectMetadata``)."""
        _checked(namespace, name)
        # lightkube's get() takes no headers; its request() (the same call) does.
        generic = self.client._client
        try:
            obj = await _retrying(
                lambda: generic.request(
                    "get",
                    Secret,
                    name=name,
                    namespace=namespace,
                    headers={"Accept": METADATA_ONLY},
                )
            )
        except httpx2.HTTPStatusError as exc:
            if _status_code(exc) == 404:
                return None
            raise
        return dict(obj.metadata.labels or {}) if obj.metadata else {}

    async def secret_data(
        self, namespace: str, name: str
    ) -> tuple[dict[str, str], dict[str, str]] | None:
        """A Secret's labels and base64 data (``None`` if it does not exist)."""
        _checked(namespace, name)
        try:
            secret = await _retrying(lambda: self.client.get(Secret, name, namespace=namespace))
        except httpx2.HTTPStatusError as exc:
            if _status_code(exc) == 404:
                return None
            raise
        labels = dict(secret.metadata.labels or {}) if secret.metadata else {}
        return labels, cast(dict[str, str], dict(secret.data or {}))

    async def workload_state(self, namespace: str, name: str) -> WorkloadState | None:
        _checked(namespace, name)
        try:
            sts = await _retrying(lambda: self.client.get(StatefulSet, name, namespace=namespace))
        except httpx2.HTTPStatusError as exc:
            if _status_code(exc) == 404:
                return None
            raise
        status = sts.status
        replicas = sts.spec.replicas if sts.spec and sts.spec.replicas is not None else 0
        if status is None:
            return WorkloadState(replicas, 0, 0)
        return WorkloadState(replicas, status.readyReplicas or 0, status.updatedReplicas or 0)
