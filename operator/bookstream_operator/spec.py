"""The LibraryInstance spec as typed, defaulted values.

The CRD's schema declares the same defaults, so the API server fills them in; they are
repeated here because the operator must not depend on that (an old object, an API
server without defaulting, or a test double) — ``tests/operator/test_operator_crd.py``
checks the two stay equal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bookstream_core.config import ConfigError, normalize_address
from bookstream_core.keys import check_library
from bookstream_core.roles import ROLES
from bookstream_core.types import ServiceName

from bookstream_operator import naming
from bookstream_operator.types import Manifest

DEFAULT_REDIS_URL = "redis://redis:6379"
DEFAULT_REPOSITORY = "bookstream"
DEFAULT_TAG = "0.1.0"
DEFAULT_PULL_POLICY = "IfNotPresent"
DEFAULT_RESOURCES: Manifest = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}


class SpecError(ValueError):
    """The spec cannot be turned into workloads; the message says which field."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    name: str
    key: str = "password"


@dataclass(frozen=True, slots=True)
class RedisSpec:
    #: Never carries credentials (refused here and by the CRD): they come from Secrets.
    url: str = DEFAULT_REDIS_URL
    #: One password for Redis' default user (simple set-ups).
    password_secret: SecretRef | None = None
    #: The library's role Secret (keys lending, shelving, ..., operator): one ACL user each.
    users_secret: str | None = None
    tls: bool = False
    db: int | None = None


# What redis-py reads from a URL besides the address: userinfo (user:password@) and every
# query parameter (password=, username=, host=, port=... override what it is given), decoded
# (pass%77ord is password). So the URL may have neither, nor anything that urlsplit and the
# rules below could read differently (%-escapes, spaces, control characters: urlsplit drops
# a tab or newline the rules would see). The CRD has the same three rules, in this order,
# with the same messages; tests/operator/test_operator_crd.py checks both on one URL list.
URL_CHARACTERS = (
    "spec.redis.url must be printable ASCII without spaces or %-escapes: write the host, "
    "port and path as they are"
)
URL_QUERY = (
    "spec.redis.url must have no query (?...) or fragment (#...): the Redis client would "
    "take settings from it, credentials or another address among them; give the database "
    "in spec.redis.db, TLS with spec.redis.tls and the password in a Secret named by "
    "spec.redis.usersSecretRef or spec.redis.passwordSecretRef"
)
URL_CREDENTIALS = (
    "spec.redis.url must not carry credentials (user:password@): put the password in a "
    "Secret labelled bookstream.io/redis-credentials=true and name it in "
    "spec.redis.usersSecretRef or spec.redis.passwordSecretRef"
)
_PLAIN = re.compile(r"[!-~]*")
_QUERY = re.compile(r"[?#]")
#: "@" anywhere before the path is userinfo, even one urlsplit would not call a user.
_USERINFO = re.compile(r"^[a-z]+://[^/]*@")


def check_redis_url(url: str) -> str:
    """``url`` if it is a Redis URL with only an address. A message quotes it only once it
    is known to carry no credentials."""
    if not _PLAIN.fullmatch(url) or "%" in url:
        raise SpecError(URL_CHARACTERS)
    if _QUERY.search(url):
        raise SpecError(URL_QUERY)
    if _USERINFO.search(url):
        raise SpecError(URL_CREDENTIALS)
    try:
        urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" (the CRD cannot tell)
        raise SpecError(f"spec.redis.url is not a valid URL: {exc}") from None
    try:
        return normalize_address(url)
    except ConfigError as exc:
        raise SpecError(f"spec.redis.url: {exc}") from None


def _secret_name(ref: Any, where: str) -> str | None:
    """The ``name`` of a Secret reference (``None``: no reference), checked as the CRD
    checks it: it becomes a request path, and an object stored before the CRD's rule was
    must not reach another Secret than its namespace's one of that name."""
    if not isinstance(ref, Mapping) or not ref.get("name"):
        return None
    name = str(ref["name"])
    if not naming.is_object_name(name):
        raise SpecError(
            f"{where}.name must be a Secret's name: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters"
        )
    return name


#: Why passwordSecretRef may not name a role's key (the CRD says the same): it is one
#: worker's password, which the operator would read and both worker sets would mount.
ROLE_KEY = (
    "spec.redis.passwordSecretRef.key must not be a role's key (lending, shelving, client, "
    "viewer, operator): each is one Redis user's password; name a role Secret in "
    "spec.redis.usersSecretRef instead, or keep this library's one password under another "
    "key (default: password)"
)


def _password_key(ref: Mapping[str, Any]) -> str:
    key = ref.get("key")
    key = "password" if key is None else str(key)
    if not naming.is_secret_key(key):
        raise SpecError(
            "spec.redis.passwordSecretRef.key must be a Secret's key: letters, digits, '-', "
            "'_' and '.', at most 253 characters"
        )
    if key in ROLES:
        raise SpecError(ROLE_KEY)
    return key


@dataclass(frozen=True, slots=True)
class ImageSpec:
    repository: str = DEFAULT_REPOSITORY
    tag: str = DEFAULT_TAG
    pull_policy: str = DEFAULT_PULL_POLICY
    pull_secrets: tuple[str, ...] = ()

    def for_service(self, service: ServiceName) -> str:
        """``<repository>/<service>:<tag>``, e.g. ``bookstream/lending:0.1.0``: the names
        ``make images`` builds and the chart uses."""
        return f"{self.repository}/{service}:{self.tag}"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    replicas: int = 1
    resources: Manifest = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    image: str | None = None


@dataclass(frozen=True, slots=True)
class LimitsSpec:
    user_limit: int = 5
    storage_capacity: int = 20


@dataclass(frozen=True, slots=True)
class WorkerTuning:
    """Optional worker settings; ``None`` leaves the worker's own default."""

    log_level: str = "info"
    batch_size: int | None = None
    in_flight: int | None = None
    claim_idle_ms: int | None = None
    max_deliveries: int | None = None
    retention_seconds: int | None = None
    termination_grace_seconds: int = 30


@dataclass(frozen=True, slots=True)
class AutoscalingSpec:
    enabled: bool = False
    min_replicas: int = 1
    max_replicas: int = 10
    target_lag_per_replica: int = 100
    cooldown_seconds: int = 120
    max_pending_age_seconds: int = 60
    scale_up_period_seconds: int = 15


@dataclass(frozen=True, slots=True)
class PlacementSpec:
    """Where worker pods run (both services), as in a pod spec; passed through verbatim."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Manifest, ...] = ()
    affinity: Manifest | None = None
    #: Empty: a soft spread over nodes; a constraint without labelSelector gets the service's.
    topology_spread: tuple[Manifest, ...] = ()
    priority_class_name: str | None = None


@dataclass(frozen=True, slots=True)
class DisruptionBudgetSpec:
    #: Workers of one service that a voluntary disruption (drain) may take down at once.
    max_unavailable: int | str = 1


@dataclass(frozen=True, slots=True)
class LibrarySpec:
    library: str = "main"
    redis: RedisSpec = field(default_factory=RedisSpec)
    image: ImageSpec = field(default_factory=ImageSpec)
    lending: ServiceSpec = field(default_factory=ServiceSpec)
    shelving: ServiceSpec = field(default_factory=ServiceSpec)
    limits: LimitsSpec = field(default_factory=LimitsSpec)
    worker: WorkerTuning = field(default_factory=WorkerTuning)
    autoscaling: AutoscalingSpec = field(default_factory=AutoscalingSpec)
    placement: PlacementSpec = field(default_factory=PlacementSpec)
    disruption_budget: DisruptionBudgetSpec = field(default_factory=DisruptionBudgetSpec)

    def service(self, service: ServiceName) -> ServiceSpec:
        return self.lending if service == "lending" else self.shelving


def _section(spec: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = spec.get(name) or {}
    if not isinstance(value, Mapping):
        raise SpecError(f"spec.{name} must be an object")
    return value


def _int(section: Mapping[str, Any], key: str, default: int, where: str, minimum: int = 0) -> int:
    value = section.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where}.{key} must be a whole number >= {minimum}, not {value!r}")
    return value


def _opt_int(section: Mapping[str, Any], key: str, where: str, minimum: int = 1) -> int | None:
    if section.get(key) is None:
        return None
    return _int(section, key, 0, where, minimum)


def _service(spec: Mapping[str, Any], name: ServiceName) -> ServiceSpec:
    section = _section(spec, name)
    resources = section.get("resources")
    image = section.get("image") or None
    return ServiceSpec(
        replicas=_int(section, "replicas", 1, f"spec.{name}"),
        resources=dict(resources) if resources else dict(DEFAULT_RESOURCES),
        image=str(image) if image else None,
    )


def _objects(section: Mapping[str, Any], key: str, where: str) -> tuple[Manifest, ...]:
    value = section.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise SpecError(f"{where}.{key} must be a list of objects")
    return tuple(dict(v) for v in value)


def _placement(spec: Mapping[str, Any]) -> PlacementSpec:
    section = _section(spec, "placement")
    selector = section.get("nodeSelector") or {}
    if not isinstance(selector, Mapping):
        raise SpecError("spec.placement.nodeSelector must be an object")
    affinity = section.get("affinity")
    if affinity is not None and not isinstance(affinity, Mapping):
        raise SpecError("spec.placement.affinity must be an object")
    priority = section.get("priorityClassName")
    return PlacementSpec(
        node_selector={str(k): str(v) for k, v in selector.items()},
        tolerations=_objects(section, "tolerations", "spec.placement"),
        affinity=dict(affinity) if affinity else None,
        topology_spread=_objects(section, "topologySpreadConstraints", "spec.placement"),
        priority_class_name=str(priority) if priority else None,
    )


def _disruption_budget(spec: Mapping[str, Any]) -> DisruptionBudgetSpec:
    value = _section(spec, "disruptionBudget").get("maxUnavailable", 1)
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise SpecError("spec.disruptionBudget.maxUnavailable must be a number or a percentage")
    if isinstance(value, int) and value < 0:
        raise SpecError("spec.disruptionBudget.maxUnavailable must be >= 0")
    return DisruptionBudgetSpec(max_unavailable=value)


def parse_spec(spec: Mapping[str, Any]) -> LibrarySpec:
    """Turn ``body['spec']`` into a :class:`LibrarySpec`, defaulting what is absent."""
    redis = _section(spec, "redis")
    secret = redis.get("passwordSecretRef")
    users = redis.get("usersSecretRef")
    db = redis.get("db")
    image = _section(spec, "image")
    limits = _section(spec, "limits")
    worker = _section(spec, "worker")
    auto = _section(spec, "autoscaling")
    library = str(spec.get("library") or "main")
    try:
        check_library(library)
    except ValueError as exc:
        raise SpecError(f"spec.library: {exc}") from None
    autoscaling = AutoscalingSpec(
        enabled=bool(auto.get("enabled", False)),
        min_replicas=_int(auto, "minReplicas", 1, "spec.autoscaling"),
        max_replicas=_int(auto, "maxReplicas", 10, "spec.autoscaling", 1),
        target_lag_per_replica=_int(auto, "targetLagPerReplica", 100, "spec.autoscaling", 1),
        cooldown_seconds=_int(auto, "cooldownSeconds", 120, "spec.autoscaling"),
        max_pending_age_seconds=_int(auto, "maxPendingAgeSeconds", 60, "spec.autoscaling", 1),
        scale_up_period_seconds=_int(auto, "scaleUpPeriodSeconds", 15, "spec.autoscaling"),
    )
    if autoscaling.min_replicas > autoscaling.max_replicas:
        raise SpecError("spec.autoscaling.minReplicas must not exceed maxReplicas")
    if secret and users:
        raise SpecError("give spec.redis.usersSecretRef or spec.redis.passwordSecretRef, not both")
    secret_name = _secret_name(secret, "spec.redis.passwordSecretRef")
    users_name = _secret_name(users, "spec.redis.usersSecretRef")
    return LibrarySpec(
        library=library,
        redis=RedisSpec(
            url=check_redis_url(str(redis.get("url") or DEFAULT_REDIS_URL)),
            password_secret=SecretRef(secret_name, _password_key(secret))
            if secret_name is not None and isinstance(secret, Mapping)
            else None,
            users_secret=users_name,
            tls=bool(redis.get("tls", False)),
            db=None if db is None else _int(redis, "db", 0, "spec.redis"),
        ),
        image=ImageSpec(
            repository=str(image.get("repository") or DEFAULT_REPOSITORY),
            tag=str(image.get("tag") or DEFAULT_TAG),
            pull_policy=str(image.get("pullPolicy") or DEFAULT_PULL_POLICY),
            pull_secrets=tuple(str(s) for s in image.get("pullSecrets") or ()),
        ),
        lending=_service(spec, "lending"),
        shelving=_service(spec, "shelving"),
        limits=LimitsSpec(
            user_limit=_int(limits, "userLimit", 5, "spec.limits", 1),
            storage_capacity=_int(limits, "storageCapacity", 20, "spec.limits"),
        ),
        worker=WorkerTuning(
            log_level=str(worker.get("logLevel") or "info"),
            batch_size=_opt_int(worker, "batchSize", "spec.worker"),
            in_flight=_opt_int(worker, "inFlight", "spec.worker"),
            claim_idle_ms=_opt_int(worker, "claimIdleMs", "spec.worker"),
            max_deliveries=_opt_int(worker, "maxDeliveries", "spec.worker"),
            retention_seconds=_opt_int(worker, "retentionSeconds", "spec.worker"),
            termination_grace_seconds=_int(
                worker, "terminationGracePeriodSeconds", 30, "spec.worker", 1
            ),
        ),
        autoscaling=autoscaling,
        placement=_placement(spec),
        disruption_budget=_disruption_budget(spec),
    )
