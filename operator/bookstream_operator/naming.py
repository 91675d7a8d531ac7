"""Names and labels: the one place that decides what every object is called.

A worker's name is its namespace and its pod's name, ``<namespace>.<instance>-<service>-
<ordinal>``: the StatefulSet guarantees at most one pod per name in a namespace, and the
namespace makes the name unique across namespaces (two LibraryInstances of one name in two
namespaces never share a worker name, hence never a worker lock). The worker uses it as its
consumer name in the service's consumer group and in its worker lock. Namespaces are DNS
labels (no dots), so the first dot separates the two parts.
"""

from __future__ import annotations

import re

from bookstream_core.types import ServiceName

GROUP = "bookstream.io"
VERSION = "v1alpha1"
KIND = "LibraryInstance"
PLURAL = "libraryinstances"
API_VERSION = f"{GROUP}/{VERSION}"

PAUSED_ANNOTATION = f"{GROUP}/paused"
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
FIELD_MANAGER = "bookstream-operator"
METRICS_PORT = 9108
#: Numeric UID/GID the worker images run as (see services/*/Dockerfile).
WORKER_UID = 10001

#: What the API server accepts as an object's name (a DNS-1123 subdomain, at most 253
#: characters), a namespace's (a DNS-1123 label, at most 63) and a Secret's key. Checked
#: before a name goes into a request path: "../" or "?" there would make the HTTP client
#: ask for another object than the one named.
OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def is_object_name(name: str) -> bool:
    return len(name) <= 253 and OBJECT_NAME.fullmatch(name) is not None


def is_namespace(namespace: str) -> bool:
    return len(namespace) <= 63 and NAMESPACE.fullmatch(namespace) is not None


def is_secret_key(key: str) -> bool:
    return len(key) <= 253 and SECRET_KEY.fullmatch(key) is not None


def workload_name(instance: str, service: ServiceName) -> str:
    return f"{instance}-{service}"


def metrics_service_name(instance: str, service: ServiceName) -> str:
    return f"{instance}-{service}-metrics"


def config_map_name(instance: str) -> str:
    return f"{instance}-config"


def worker_name(namespace: str, instance: str, service: ServiceName, ordinal: int) -> str:
    return f"{namespace}.{workload_name(instance, service)}-{ordinal}"


def worker_names(namespace: str, instance: str, service: ServiceName, replicas: int) -> list[str]:
    return [worker_name(namespace, instance, service, i) for i in range(replicas)]


def ordinal_of(namespace: str, instance: str, service: ServiceName, consumer: str) -> int | None:
    """The ordinal of a consumer named like one of this workload's workers, else ``None``."""
    match = re.fullmatch(
        re.escape(f"{namespace}.{workload_name(instance, service)}") + r"-(0|[1-9][0-9]*)",
        consumer,
    )
    return int(match.group(1)) if match else None


def legacy_ordinal_of(instance: str, service: ServiceName, consumer: str) -> int | None:
    """The ordinal of a consumer named like an older operator's worker (the bare pod name,
    ``<instance>-<service>-<n>``), else ``None``. Those workers are gone after the upgrade."""
    match = re.fullmatch(
        re.escape(workload_name(instance, service)) + r"-(0|[1-9][0-9]*)", consumer
    )
    return int(match.group(1)) if match else None


def selector_labels(instance: str, service: ServiceName) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "bookstream",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": service,
    }


def selector_string(instance: str, service: ServiceName) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(instance, service).items())


def common_labels(instance: str, version: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "bookstream",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/part-of": "bookstream",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        "app.kubernetes.io/version": label_value(version),
    }


def label_value(value: str) -> str:
    """Make a string fit a label value (<= 63 chars, alphanumerics, '-', '_', '.')."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", value)[:63]
    return cleaned.strip("_.-") or "unknown"
