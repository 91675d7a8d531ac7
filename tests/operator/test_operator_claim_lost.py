"""A library's claim lost with Redis's data (a restart without persistence, a failover):
another LibraryInstance takes the library, and the first, finding it claimed by someone
else, scales its own workers to 0 instead of leaving them consuming it too (issue 12
breaker). reconcile() runs against a real redis-server; the Kubernetes side is an
in-memory record of what was applied (no API server here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bookstream_operator.kube import WorkloadState
from bookstream_operator.reconcile import reconcile
from bookstream_operator.types import Manifest

from tests.conftest import RedisServer


class Cluster:
    """What was applied, per namespace: enough for reconcile() to read back."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.applied: dict[tuple[str, str], Manifest] = {}

    async def apply(self, manifest: Manifest) -> None:
        self.applied[(manifest["kind"], manifest["metadata"]["name"])] = manifest

    async def read_secret(self, namespace: str, name: str, key: str) -> str:
        raise AssertionError("no Secret in these specs")

    async def instance_uid(self, namespace: str, name: str) -> str | None:
        return {"a": "uid-a", "b": "uid-b"}.get(name)  # both still exist

    async def workload_state(self, namespace: str, name: str) -> WorkloadState | None:
        found = self.applied.get(("StatefulSet", name))
        if found is None:
            return None
        replicas = int(found["spec"]["replicas"])
        return WorkloadState(replicas, replicas, replicas)

    def replicas(self) -> dict[str, int]:
        return {
            name: int(obj["spec"]["replicas"])
            for (kind, name), obj in self.applied.items()
            if kind == "StatefulSet"
        }


async def _pass(cluster: Cluster, name: str, spec: dict[str, Any], now: float) -> str:
    result = await reconcile(
        cluster,  # type: ignore[arg-type]
        name=name, namespace=cluster.namespace, uid=f"uid-{name}", generation=1,
        spec_body=spec, status={}, annotations={}, now=now,
    )  # fmt: skip
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    return str(ready["reason"] if ready["status"] != "True" else "Ready")


async def test_an_instance_that_lost_its_claim_stops_its_workers(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    spec = {"library": "shared", "redis": {"url": server.url}}
    a, b = Cluster("ns1"), Cluster("ns2")
    assert await _pass(a, "a", spec, 1e6) != "Conflict"
    assert a.replicas() and all(n > 0 for n in a.replicas().values())
    assert await _pass(b, "b", spec, 1e6 + 1) == "Conflict"
    assert b.applied == {}  # the second creates nothing

    server.client().flushall()  # the claim is gone with the data
    assert await _pass(b, "b", spec, 1e6 + 2) != "Conflict"  # b takes the library
    assert all(n > 0 for n in b.replicas().values())
    assert await _pass(a, "a", spec, 1e6 + 3) == "Conflict"
    assert a.replicas() and all(n == 0 for n in a.replicas().values())


async def test_a_failed_pass_leaves_no_condition_from_an_earlier_one(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """Breaker: an InvalidSpec pass left RedisReachable=True (and Progressing, Warning)
    as an earlier pass had seen them."""
    server = redis_factory()
    cluster = Cluster("ns1")
    good = await reconcile(
        cluster,  # type: ignore[arg-type]
        name="a", namespace="ns1", uid="uid-a", generation=1,
        spec_body={"library": "one", "redis": {"url": server.url}}, status={},
        annotations={}, now=1e6,
    )  # fmt: skip
    bad = await reconcile(
        cluster,  # type: ignore[arg-type]
        name="a", namespace="ns1", uid="uid-a", generation=2,
        spec_body={"library": "one", "redis": {"url": server.url}, "lending": {"replicas": -1}},
        status=good.status, annotations={}, now=1e6 + 1,
    )  # fmt: skip
    by_type = {c["type"]: c for c in bad.status["conditions"]}
    assert by_type["Ready"]["reason"] == "InvalidSpec"
    for kind in ("RedisReachable", "Progressing", "Warning"):
        assert by_type[kind]["status"] == "Unknown", by_type[kind]
