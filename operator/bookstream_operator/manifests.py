"""Desired state: plain functions from a LibraryInstance to the objects it should own.

Nothing here talks to Kubernetes or Redis; every function returns a manifest (a dict),
so each spec field's effect is testable without a cluster.

No password is ever in a manifest: a worker gets its own key of the named Secret as a
file (a Secret volume, which the kubelet updates when the Secret changes, and which the
worker reads again for every new connection), and the file's path and its ACL user name
in the environment.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from bookstream_core.keys import SERVICES
from bookstream_core.roles import user_name
from bookstream_core.types import ServiceName

from bookstream_operator import naming
from bookstream_operator.spec import LibrarySpec
from bookstream_operator.types import Manifest

#: Where a worker's Redis password file is mounted (a directory of its own: the volume
#: is mounted whole, never with subPath, which the kubelet would not update).
PASSWORD_DIR = "/var/run/secrets/bookstream/redis"
PASSWORD_FILE = f"{PASSWORD_DIR}/password"
PASSWORD_VOLUME = "redis-password"


@dataclass(frozen=True, slots=True)
class Owner:
    """The LibraryInstance that owns the objects: identity only."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> Manifest:
        return {
            "apiVersion": naming.API_VERSION,
            "kind": naming.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _metadata(owner: Owner, name: str, labels: dict[str, str]) -> Manifest:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner.reference()],
    }


def config_data(spec: LibrarySpec) -> dict[str, str]:
    """The non-secret worker settings, as the BOOKSTREAM_* variables the workers read."""
    data = {
        "BOOKSTREAM_REDIS_URL": spec.redis.url,
        "BOOKSTREAM_REDIS_SSL": "true" if spec.redis.tls else "false",
        "BOOKSTREAM_LIBRARY": spec.library,
        "BOOKSTREAM_USER_LIMIT": str(spec.limits.user_limit),
        "BOOKSTREAM_STORAGE_CAPACITY": str(spec.limits.storage_capacity),
        "BOOKSTREAM_METRICS_PORT": str(naming.METRICS_PORT),
        # Workers listen on loopback unless told: the kubelet's probes and Prometheus
        # come from outside the pod.
        "BOOKSTREAM_METRICS_HOST": "0.0.0.0",
        "BOOKSTREAM_LOG_FORMAT": "json",
        "BOOKSTREAM_LOG_LEVEL": spec.worker.log_level,
    }
    optional = {
        "BOOKSTREAM_REDIS_DB": spec.redis.db,
        "BOOKSTREAM_BATCH_SIZE": spec.worker.batch_size,
        "BOOKSTREAM_IN_FLIGHT": spec.worker.in_flight,
        "BOOKSTREAM_CLAIM_IDLE_MS": spec.worker.claim_idle_ms,
        "BOOKSTREAM_MAX_DELIVERIES": spec.worker.max_deliveries,
        "BOOKSTREAM_RETENTION_S": spec.worker.retention_seconds,
    }
    data.update({k: str(v) for k, v in optional.items() if v is not None})
    return data


def config_map(owner: Owner, spec: LibrarySpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            owner,
            naming.config_map_name(owner.name),
            naming.common_labels(owner.name, spec.image.tag),
        ),
        "data": config_data(spec),
    }


def config_hash(spec: LibrarySpec) -> str:
    """Changes whenever the ConfigMap's data does, so that pods roll to pick it up."""
    blob = json.dumps(config_data(spec), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def service_labels(owner: Owner, spec: LibrarySpec, service: ServiceName) -> dict[str, str]:
    return {
        **naming.common_labels(owner.name, spec.image.tag),
        **naming.selector_labels(owner.name, service),
    }


def image_of(spec: LibrarySpec, service: ServiceName) -> str:
    return spec.service(service).image or spec.image.for_service(service)


def password_volume(spec: LibrarySpec, service: ServiceName) -> Manifest | None:
    """The Secret volume with this service's password and nothing else (``None``: none)."""
    redis = spec.redis
    if redis.users_secret is not None:
        name, key = redis.users_secret, str(service)  # the role Secret's key per service
    elif redis.password_secret is not None:
        name, key = redis.password_secret.name, redis.password_secret.key
    else:
        return None
    return {
        "name": PASSWORD_VOLUME,
        "secret": {
            "secretName": name,
            "items": [{"key": key, "path": "password"}],
            # Owner root, group the pod's fsGroup (the worker's): readable by it alone.
            "defaultMode": 0o440,
        },
    }


def _env(spec: LibrarySpec, service: ServiceName) -> list[Manifest]:
    env: list[Manifest] = [
        {
            "name": "BOOKSTREAM_POD_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "BOOKSTREAM_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # <namespace>.<pod name> (naming.worker_name): unique across namespaces. Kubernetes
        # expands $(VAR) from the variables defined above it.
        {
            "name": "BOOKSTREAM_WORKER_NAME",
            "value": "$(BOOKSTREAM_POD_NAMESPACE).$(BOOKSTREAM_POD_NAME)",
        },
        # The StatefulSet runs at most one pod per name, so a stale lock left by this
        # name's previous pod may be taken over at once instead of waiting for its TTL.
        {"name": "BOOKSTREAM_FORCE", "value": "true"},
    ]
    if spec.redis.users_secret is not None:
        env.append({"name": "BOOKSTREAM_REDIS_USER", "value": user_name(spec.library, service)})
    if password_volume(spec, service) is not None:
        env.append({"name": "BOOKSTREAM_REDIS_PASSWORD_FILE", "value": PASSWORD_FILE})
    return env


def stateful_set(owner: Owner, spec: LibrarySpec, service: ServiceName, replicas: int) -> Manifest:
    """The worker set of one service; ``replicas`` is decided by the caller (spec or autoscaler)."""
    labels = service_labels(owner, spec, service)
    probe = {"port": "metrics", "scheme": "HTTP"}
    container: Manifest = {
        "name": service,
        "image": image_of(spec, service),
        "imagePullPolicy": spec.image.pull_policy,
        "envFrom": [{"configMapRef": {"name": naming.config_map_name(owner.name)}}],
        "env": _env(spec, service),
        "ports": [{"name": "metrics", "containerPort": naming.METRICS_PORT, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", **probe},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "resources": spec.service(service).resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": naming.WORKER_UID,
            "runAsGroup": naming.WORKER_UID,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]
    secret_volume = password_volume(spec, service)
    if secret_volume is not None:
        volumes.append(secret_volume)
        container["volumeMounts"].append(
            {"name": PASSWORD_VOLUME, "mountPath": PASSWORD_DIR, "readOnly": True}
        )
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": spec.worker.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": naming.WORKER_UID,
            "runAsGroup": naming.WORKER_UID,
            "fsGroup": naming.WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if spec.image.pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in spec.image.pull_secrets]
    pod_spec.update(_placement(owner, spec, service))
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(owner, naming.workload_name(owner.name, service), labels),
        "spec": {
            "replicas": replicas,
            "serviceName": naming.metrics_service_name(owner.name, service),
            # Workers are independent of each other: start and stop them all at once.
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": naming.selector_labels(owner.name, service)},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {naming.CONFIG_HASH_ANNOTATION: config_hash(spec)},
                },
                "spec": pod_spec,
            },
        },
    }


def _placement(owner: Owner, spec: LibrarySpec, service: ServiceName) -> Manifest:
    placement = spec.placement
    selector = {"matchLabels": naming.selector_labels(owner.name, service)}
    # Without constraints of the user's, spread the workers over nodes when possible, so
    # that one node going away does not take a whole service with it.
    spread = [dict(c) for c in placement.topology_spread] or [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
        }
    ]
    for constraint in spread:
        constraint.setdefault("labelSelector", selector)
    out: Manifest = {"topologySpreadConstraints": spread}
    if placement.node_selector:
        out["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        out["tolerations"] = [dict(t) for t in placement.tolerations]
    if placement.affinity:
        out["affinity"] = dict(placement.affinity)
    if placement.priority_class_name:
        out["priorityClassName"] = placement.priority_class_name
    return out


def disruption_budget(owner: Owner, spec: LibrarySpec, service: ServiceName) -> Manifest:
    """At most ``maxUnavailable`` workers of a service go down at once in a node drain.

    Always present (no delete permission is needed to turn it off: a large value does).
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(
            owner, naming.workload_name(owner.name, service), service_labels(owner, spec, service)
        ),
        "spec": {
            "maxUnavailable": spec.disruption_budget.max_unavailable,
            "selector": {"matchLabels": naming.selector_labels(owner.name, service)},
        },
    }


def metrics_service(owner: Owner, spec: LibrarySpec, service: ServiceName) -> Manifest:
    """Headless: it governs the StatefulSet's pod DNS names and lists every worker to scrape."""
    port = str(naming.METRICS_PORT)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            **_metadata(
                owner,
                naming.metrics_service_name(owner.name, service),
                service_labels(owner, spec, service),
            ),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": port,
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": naming.selector_labels(owner.name, service),
            "ports": [
                {
                    "name": "metrics",
                    "port": naming.METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                }
            ],
        },
    }


def desired_objects(
    owner: Owner, spec: LibrarySpec, replicas: dict[ServiceName, int]
) -> list[Manifest]:
    """Everything one LibraryInstance owns, in the order to apply it."""
    objects = [config_map(owner, spec)]
    for service in SERVICES:
        objects.append(metrics_service(owner, spec, service))
        objects.append(stateful_set(owner, spec, service, replicas[service]))
        objects.append(disruption_budget(owner, spec, service))
    return objects
