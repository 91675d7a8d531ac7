"""Desired state: each spec field's effect on the manifests (no cluster, no Redis)."""

from __future__ import annotations

import argparse
import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from bookstream_core.config import add_worker_arguments, worker_settings_from
from bookstream_core.settings import SETTINGS
from bookstream_operator import manifests, naming
from bookstream_operator.manifests import Owner
from bookstream_operator.spec import DEFAULT_RESOURCES, SpecError, parse_spec

OWNER = Owner("lib1", "books", "uid-1")


def objects(spec: dict[str, Any], lending: int = 2, shelving: int = 1) -> dict[str, dict[str, Any]]:
    parsed = parse_spec(spec)
    out = manifests.desired_objects(OWNER, parsed, {"lending": lending, "shelving": shelving})
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in out}


def container(objs: dict[str, dict[str, Any]], service: str) -> dict[str, Any]:
    sts = objs[f"StatefulSet/lib1-{service}"]
    return dict(sts["spec"]["template"]["spec"]["containers"][0])


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_every_object_is_owned_and_labelled() -> None:
    objs = objects({})
    assert sorted(objs) == [
        "ConfigMap/lib1-config",
        "PodDisruptionBudget/lib1-lending",
        "PodDisruptionBudget/lib1-shelving",
        "Service/lib1-lending-metrics",
        "Service/lib1-shelving-metrics",
        "StatefulSet/lib1-lending",
        "StatefulSet/lib1-shelving",
    ]
    for obj in objs.values():
        meta = obj["metadata"]
        assert meta["namespace"] == "books"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "bookstream.io/v1alpha1",
                "kind": "LibraryInstance",
                "name": "lib1",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/instance"] == "lib1"
        assert meta["labels"]["app.kubernetes.io/name"] == "bookstream"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "bookstream-operator"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "bookstream"
    sts = objs["StatefulSet/lib1-lending"]
    assert sts["metadata"]["labels"]["app.kubernetes.io/component"] == "lending"
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selector.items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert "app.kubernetes.io/version" not in selector  # an upgrade must not change the selector


def test_replicas_per_service_and_pod_names_are_worker_names() -> None:
    objs = objects({}, lending=3, shelving=0)
    assert objs["StatefulSet/lib1-lending"]["spec"]["replicas"] == 3
    assert objs["StatefulSet/lib1-shelving"]["spec"]["replicas"] == 0
    env = env_of(container(objs, "lending"))
    # <namespace>.<pod name>: unique across namespaces, expanded by Kubernetes from the
    # downward API variables defined before it.
    names = [e["name"] for e in container(objs, "lending")["env"]]
    assert names.index("BOOKSTREAM_POD_NAMESPACE") < names.index("BOOKSTREAM_WORKER_NAME")
    assert names.index("BOOKSTREAM_POD_NAME") < names.index("BOOKSTREAM_WORKER_NAME")
    assert env["BOOKSTREAM_POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["BOOKSTREAM_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["BOOKSTREAM_WORKER_NAME"] == "$(BOOKSTREAM_POD_NAMESPACE).$(BOOKSTREAM_POD_NAME)"
    assert env["BOOKSTREAM_FORCE"] == "true"
    assert naming.worker_names("books", "lib1", "lending", 3) == [
        "books.lib1-lending-0",
        "books.lib1-lending-1",
        "books.lib1-lending-2",
    ]
    assert naming.worker_names("shelves", "lib1", "lending", 1) != naming.worker_names(
        "books", "lib1", "lending", 1
    )
    sts = objs["StatefulSet/lib1-lending"]
    assert sts["spec"]["serviceName"] == "lib1-lending-metrics"


def test_replicas_come_from_the_spec() -> None:
    spec = parse_spec({"lending": {"replicas": 4}, "shelving": {"replicas": 2}})
    assert (spec.lending.replicas, spec.shelving.replicas) == (4, 2)
    assert (parse_spec({}).lending.replicas, parse_spec({}).shelving.replicas) == (1, 1)


def test_images_default_override_and_pull_settings() -> None:
    objs = objects({})
    assert container(objs, "lending")["image"] == "bookstream/lending:0.1.0"
    assert container(objs, "shelving")["image"] == "bookstream/shelving:0.1.0"
    assert container(objs, "lending")["imagePullPolicy"] == "IfNotPresent"
    objs = objects(
        {
            "image": {
                "repository": "reg.example/bs",
                "tag": "1.2.3",
                "pullPolicy": "Always",
                "pullSecrets": ["regcred"],
            },
            "shelving": {"image": "other/shelving@sha256:abc"},
        }
    )
    assert container(objs, "lending")["image"] == "reg.example/bs/lending:1.2.3"
    assert container(objs, "shelving")["image"] == "other/shelving@sha256:abc"
    assert container(objs, "lending")["imagePullPolicy"] == "Always"
    pod = objs["StatefulSet/lib1-lending"]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert objs["StatefulSet/lib1-lending"]["metadata"]["labels"]["app.kubernetes.io/version"] == (
        "1.2.3"
    )


def test_limits_and_worker_settings_reach_the_config_map() -> None:
    data = objects({})["ConfigMap/lib1-config"]["data"]
    assert data["BOOKSTREAM_USER_LIMIT"] == "5"
    assert data["BOOKSTREAM_STORAGE_CAPACITY"] == "20"
    assert data["BOOKSTREAM_LIBRARY"] == "main"
    assert data["BOOKSTREAM_LOG_FORMAT"] == "json"
    assert data["BOOKSTREAM_METRICS_PORT"] == "9108"
    assert "BOOKSTREAM_BATCH_SIZE" not in data and "BOOKSTREAM_IN_FLIGHT" not in data
    objs = objects(
        {
            "library": "branch-2",
            "limits": {"userLimit": 3, "storageCapacity": 0},
            "worker": {
                "logLevel": "debug",
                "batchSize": 50,
                "inFlight": 4,
                "claimIdleMs": 5000,
                "maxDeliveries": 3,
                "retentionSeconds": 600,
                "terminationGracePeriodSeconds": 45,
            },
        }
    )
    data = objs["ConfigMap/lib1-config"]["data"]
    assert data["BOOKSTREAM_USER_LIMIT"] == "3"
    assert data["BOOKSTREAM_STORAGE_CAPACITY"] == "0"
    assert data["BOOKSTREAM_LIBRARY"] == "branch-2"
    assert data["BOOKSTREAM_LOG_LEVEL"] == "debug"
    assert data["BOOKSTREAM_BATCH_SIZE"] == "50"
    assert data["BOOKSTREAM_IN_FLIGHT"] == "4"
    assert data["BOOKSTREAM_CLAIM_IDLE_MS"] == "5000"
    assert data["BOOKSTREAM_MAX_DELIVERIES"] == "3"
    assert data["BOOKSTREAM_RETENTION_S"] == "600"
    pod = objs["StatefulSet/lib1-lending"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 45
    assert container(objs, "lending")["envFrom"] == [{"configMapRef": {"name": "lib1-config"}}]


def test_config_change_rolls_the_pods() -> None:
    def hash_of(spec: dict[str, Any]) -> str:
        sts = objects(spec)["StatefulSet/lib1-lending"]
        return str(sts["spec"]["template"]["metadata"]["annotations"]["bookstream.io/config-hash"])

    assert hash_of({}) == hash_of({})
    assert hash_of({}) != hash_of({"limits": {"userLimit": 6}})
    assert hash_of({}) != hash_of({"redis": {"url": "redis://other:6379"}})


def pod_spec(objs: dict[str, dict[str, Any]], service: str) -> dict[str, Any]:
    return dict(objs[f"StatefulSet/lib1-{service}"]["spec"]["template"]["spec"])


def no_secret_values(objs: dict[str, dict[str, Any]]) -> None:
    """No object carries a password: no secretKeyRef env, no literal, nothing in config."""
    for obj in objs.values():
        text = str(obj)
        assert "secretKeyRef" not in text and "BOOKSTREAM_REDIS_PASSWORD'" not in text, obj
    for service in ("lending", "shelving"):
        env = env_of(container(objs, service))
        assert "BOOKSTREAM_REDIS_PASSWORD" not in env
    assert not any("PASSWORD" in k for k in objs["ConfigMap/lib1-config"]["data"])


def test_redis_settings_without_a_password() -> None:
    objs = objects({})
    data = objs["ConfigMap/lib1-config"]["data"]
    assert data["BOOKSTREAM_REDIS_URL"] == "redis://redis:6379"
    assert data["BOOKSTREAM_REDIS_SSL"] == "false"
    assert "BOOKSTREAM_REDIS_DB" not in data
    # The metrics port must answer the kubelet's probes and Prometheus, from outside the pod.
    assert data["BOOKSTREAM_METRICS_HOST"] == "0.0.0.0"
    no_secret_values(objs)
    for service in ("lending", "shelving"):
        env = env_of(container(objs, service))
        assert "BOOKSTREAM_REDIS_PASSWORD_FILE" not in env and "BOOKSTREAM_REDIS_USER" not in env
        assert [v["name"] for v in pod_spec(objs, service)["volumes"]] == ["tmp"]


def test_a_password_secret_is_mounted_as_a_file_for_the_default_user() -> None:
    objs = objects(
        {
            "redis": {
                "url": "rediss://r.example:6380",
                "tls": True,
                "db": 2,
                "passwordSecretRef": {"name": "redis-auth", "key": "pw"},
            }
        }
    )
    data = objs["ConfigMap/lib1-config"]["data"]
    assert data["BOOKSTREAM_REDIS_URL"] == "rediss://r.example:6380"
    assert data["BOOKSTREAM_REDIS_SSL"] == "true"
    assert data["BOOKSTREAM_REDIS_DB"] == "2"
    no_secret_values(objs)
    for service in ("lending", "shelving"):
        env = env_of(container(objs, service))
        assert env["BOOKSTREAM_REDIS_PASSWORD_FILE"] == "/var/run/secrets/bookstream/redis/password"
        assert "BOOKSTREAM_REDIS_USER" not in env  # Redis' default user
        assert mounted_secret(objs, service) == ("redis-auth", "pw")


def mounted_secret(objs: dict[str, dict[str, Any]], service: str) -> tuple[str, str]:
    """(Secret, its one key) mounted at the password file's directory, checked for how:
    read-only, whole (a subPath mount is never updated: no rotation), one key only."""
    spec = pod_spec(objs, service)
    (mount,) = [m for m in container(objs, service)["volumeMounts"] if m["name"] != "tmp"]
    assert mount == {
        "name": "redis-password",
        "mountPath": "/var/run/secrets/bookstream/redis",
        "readOnly": True,
    }
    (volume,) = [v for v in spec["volumes"] if v["name"] == "redis-password"]
    secret = volume["secret"]
    (item,) = secret["items"]
    assert item["path"] == "password"
    # Readable by the owner (root) and the pod's fsGroup, which is the worker's group.
    assert secret["defaultMode"] == 0o440 and spec["securityContext"]["fsGroup"] == 10001
    assert container(objs, service)["securityContext"]["runAsGroup"] == 10001
    return str(secret["secretName"]), str(item["key"])


def test_a_role_secret_gives_each_service_its_own_key_and_acl_user() -> None:
    objs = objects({"library": "east", "redis": {"usersSecretRef": {"name": "east-users"}}})
    no_secret_values(objs)
    for service in ("lending", "shelving"):
        env = env_of(container(objs, service))
        assert env["BOOKSTREAM_REDIS_USER"] == f"bs-east-{service}"
        assert env["BOOKSTREAM_REDIS_PASSWORD_FILE"] == "/var/run/secrets/bookstream/redis/password"
        # Its own key only: lending's pods never see shelving's (or the operator's) password.
        assert mounted_secret(objs, service) == ("east-users", service)
    # Switching Secrets changes the pod template, so the workers roll onto it.
    other = objects({"library": "east", "redis": {"usersSecretRef": {"name": "rotated"}}})
    assert pod_spec(other, "lending") != pod_spec(objs, "lending")


def test_resources_default_and_per_service() -> None:
    objs = objects({})
    assert container(objs, "lending")["resources"] == DEFAULT_RESOURCES
    custom = {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}
    objs = objects({"shelving": {"resources": custom}})
    assert container(objs, "shelving")["resources"] == custom
    assert container(objs, "lending")["resources"] == DEFAULT_RESOURCES


def test_pod_security_probes_and_metrics_service() -> None:
    objs = objects({})
    c = container(objs, "lending")
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["ports"] == [{"name": "metrics", "containerPort": 9108, "protocol": "TCP"}]
    pod = objs["StatefulSet/lib1-lending"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    svc = objs["Service/lib1-lending-metrics"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"][0]["name"] == "metrics"
    assert svc["spec"]["ports"][0]["port"] == 9108
    assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == "9108"
    assert svc["spec"]["selector"] == naming.selector_labels("lib1", "lending")


def test_autoscaling_spec_fields() -> None:
    auto = parse_spec(
        {
            "autoscaling": {
                "enabled": True,
                "minReplicas": 2,
                "maxReplicas": 8,
                "targetLagPerReplica": 50,
                "cooldownSeconds": 30,
                "maxPendingAgeSeconds": 10,
            }
        }
    ).autoscaling
    assert (auto.enabled, auto.min_replicas, auto.max_replicas) == (True, 2, 8)
    assert (auto.target_lag_per_replica, auto.cooldown_seconds) == (50, 30)
    assert auto.max_pending_age_seconds == 10
    assert parse_spec({}).autoscaling.enabled is False


@pytest.mark.parametrize(
    "spec",
    [
        {"library": "has{brace}"},
        {"lending": {"replicas": -1}},
        {"lending": {"replicas": "3"}},
        {"limits": {"userLimit": 0}},
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        {"redis": "redis://x"},
    ],
)
def test_invalid_specs_are_rejected_with_the_field_named(spec: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match=r"spec\."):
        parse_spec(spec)


PLACEMENT = {
    "nodeSelector": {"pool": "workers"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "bs", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
        }
    ],
    "priorityClassName": "bookstream-high",
}


def test_placement_reaches_both_services_pods() -> None:
    objs = objects({"placement": PLACEMENT})
    for service in ("lending", "shelving"):
        pod = objs[f"StatefulSet/lib1-{service}"]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"pool": "workers"}
        assert pod["tolerations"] == PLACEMENT["tolerations"]
        assert pod["affinity"] == PLACEMENT["affinity"]
        assert pod["priorityClassName"] == "bookstream-high"
        (spread,) = pod["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone"
        # A constraint without a labelSelector counts this service's workers.
        assert spread["labelSelector"] == {
            "matchLabels": naming.selector_labels("lib1", service)  # type: ignore[arg-type]
        }


def test_workers_spread_over_nodes_by_default() -> None:
    pod = objects({})["StatefulSet/lib1-lending"]["spec"]["template"]["spec"]
    assert pod["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": naming.selector_labels("lib1", "lending")},
        }
    ]
    assert not {"nodeSelector", "tolerations", "affinity", "priorityClassName"} & pod.keys()


def test_a_disruption_budget_per_service() -> None:
    objs = objects({})
    pdb = objs["PodDisruptionBudget/lib1-lending"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": naming.selector_labels("lib1", "lending")},
    }
    assert pdb["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    sts = objs["StatefulSet/lib1-lending"]
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]
    pct = objects({"disruptionBudget": {"maxUnavailable": "50%"}})
    assert pct["PodDisruptionBudget/lib1-shelving"]["spec"]["maxUnavailable"] == "50%"
    for bad in ({"maxUnavailable": -1}, {"maxUnavailable": True}, {"maxUnavailable": ""}):
        with pytest.raises(SpecError, match="disruptionBudget"):
            parse_spec({"disruptionBudget": bad})
    with pytest.raises(SpecError, match="tolerations"):
        parse_spec({"placement": {"tolerations": {"key": "x"}}})


def _expand(env: dict[str, str], match: re.Match[str]) -> str:
    return env[match.group(1)]


def test_the_workers_read_what_the_operator_gives_them(tmp_path: Path) -> None:
    """The ConfigMap and the container's environment, resolved as the kubelet would (the
    downward API, $(VAR), the mounted file), make valid worker settings with the role's user
    and the password file; every variable is a worker setting."""
    spec = {"library": "east", "redis": {"usersSecretRef": {"name": "east-users"}}}
    objs = objects(spec)
    known = {s.variable for s in SETTINGS}
    mounted = tmp_path / "password"
    mounted.write_text("lend-pw\n")  # the kubelet writes the Secret's key here
    for service in ("lending", "shelving"):
        env = dict(objs["ConfigMap/lib1-config"]["data"])
        downward = {"BOOKSTREAM_POD_NAMESPACE": "books", "BOOKSTREAM_POD_NAME": "lib1-x-0"}
        for var in container(objs, service)["env"]:
            value = str(var.get("value", downward.get(var["name"])))
            # Kubernetes expands $(VAR) from the variables defined before it.
            env[var["name"]] = re.sub(r"\$\((\w+)\)", partial(_expand, env), value)
        assert env["BOOKSTREAM_REDIS_PASSWORD_FILE"] == manifests.PASSWORD_FILE
        assert set(env) - known <= set(downward), set(env) - known
        env["BOOKSTREAM_REDIS_PASSWORD_FILE"] = str(mounted)
        parser = argparse.ArgumentParser()
        add_worker_arguments(parser)
        settings = worker_settings_from(service, parser.parse_args([]), env)
        assert settings.name == "books.lib1-x-0" and settings.library == "east"
        assert settings.redis.user == f"bs-east-{service}"
        assert settings.redis.password is None and settings.redis.password_file == str(mounted)
        assert settings.redis.describe() == "redis://redis:6379"
        assert settings.observability.metrics_port == naming.METRICS_PORT
        assert settings.observability.metrics_host == "0.0.0.0"  # probes, Prometheus
