"""The operator process end to end: kopf against KMock, workers' Redis for real.

KMock (the in-memory Kubernetes API that kopf's own tests use) checks the wiring --
discovery, watching, status patches through the subresource, events, server-side
apply with its create fallback -- not Kubernetes itself: there is no controller
behind a StatefulSet, no garbage collector and no admission (no schema defaulting),
so the tests play the StatefulSet controller where readiness matters.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import kmock
import kopf
import pytest
import redis
import yaml
from bookstream_core.keys import LibraryKeys
from bookstream_operator.handlers import register
from bookstream_operator.settings import OperatorConfig

if TYPE_CHECKING:
    from conftest import RedisServer

NS = "books"
LI_PATH = f"/apis/bookstream.io/v1alpha1/namespaces/{NS}/libraryinstances"
KEYS = LibraryKeys("main")


def find(
    k: kmock.KubernetesEmulator, plural: str, name: str, ns: str = NS
) -> dict[str, Any] | None:
    for (resource, namespace, obj_name), obj in k.objects.items():
        if resource.plural == plural and namespace == ns and obj_name == name and not obj.deleted:
            return dict(obj.raw)
    return None


def events(k: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    """Every event kopf posted (KMock ignores generateName, so read the requests, not objects)."""
    return [dict(req.data) for req in k[f"post /api/v1/namespaces/{NS}/events"] if req.data]


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (KeyError, TypeError, AssertionError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            return check()
        await asyncio.sleep(0.1)


@pytest.fixture
def api(
    kmock: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> kmock.KubernetesEmulator:
    kmock.resources["bookstream.io/v1alpha1/libraryinstances"] = kmock.ResourceInfo(
        kind="LibraryInstance",
        singular="libraryinstance",
        namespaced=True,
        verbs={"list", "watch", "get", "patch", "create", "delete"},
        shortnames={"li"},
        subresources={"status", "scale"},
    )
    # What kopf discovers on any cluster before it starts watching.
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"list", "watch", "get"}
    )
    kmock.resources["v1/events"] = kmock.ResourceInfo(
        kind="Event", namespaced=True, verbs={"create", "list", "get"}
    )
    kmock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch", "get"}
    )
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "kmock", "user": {}}],
        "contexts": [
            {"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": NS}}
        ],
        "current-context": "kmock",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(path))
    # No service account here: both kopf and lightkube fall back to $KUBECONFIG.
    return kmock


@pytest.fixture
async def operator(api: kmock.KubernetesEmulator) -> AsyncIterator[None]:
    """The operator in its own thread and event loop, as it runs in its pod.

    (kopf cancels every task it did not start when it stops, so it cannot share the
    test's loop; KMock keeps serving in the test's loop while the test awaits.)
    """
    registry = kopf.OperatorRegistry()
    # A long server-side watch timeout: KMock cannot resume a watch from a resourceVersion,
    # so an event falling between a watch's end and the next LIST would be lost.
    register(registry, OperatorConfig(interval_s=0.3, watch_timeout_s=600))
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    clusterwide=True,
                    standalone=True,
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="operator", daemon=True)
    thread.start()
    for _ in range(100):
        if ready.is_set() or errors:
            break
        await asyncio.sleep(0.1)
    assert ready.is_set(), errors
    yield
    stop.set()
    for _ in range(150):
        if not thread.is_alive():
            break
        await asyncio.sleep(0.1)
    assert not thread.is_alive(), "operator did not stop"
    assert not errors, errors


@pytest.fixture
async def http(api: kmock.KubernetesEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=str(api.url)) as session:
        yield session


async def patch_li(http: aiohttp.ClientSession, name: str, body: dict[str, Any]) -> None:
    async with http.patch(
        f"{LI_PATH}/{name}", json=body, headers={"Content-Type": "application/merge-patch+json"}
    ) as resp:
        assert resp.status == 200, await resp.text()


def play_statefulset_controller(api: kmock.KubernetesEmulator, name: str) -> None:
    """Mark a StatefulSet's pods ready, as its controller would once they pass /readyz."""
    for (res, ns, obj_name), obj in api.objects.items():
        if res.plural == "statefulsets" and ns == NS and obj_name == name and not obj.deleted:
            n = obj.raw["spec"]["replicas"]
            obj.patch({"status": {"replicas": n, "readyReplicas": n, "updatedReplicas": n}})


def condition(li: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((li or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


async def test_create_update_scale_pause_delete(
    operator: None,
    api: kmock.KubernetesEmulator,
    http: aiohttp.ClientSession,
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    server.client().config_set("requirepass", "s3cret")
    client = redis.Redis(unix_socket_path=str(server.socket), password="s3cret")
    async with http.post(
        f"/api/v1/namespaces/{NS}/secrets",
        json={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis-auth", "namespace": NS},
            "data": {"pw": base64.b64encode(b"s3cret").decode()},
        },
    ) as resp:
        assert resp.status in (200, 201), await resp.text()
    client.xgroup_create(KEYS.inbox("lending"), "lending", id="0", mkstream=True)
    for i in range(10):
        client.xadd(KEYS.inbox("lending"), {"n": str(i)})

    li = {
        "apiVersion": "bookstream.io/v1alpha1",
        "kind": "LibraryInstance",
        "metadata": {
            "name": "lib1",
            "namespace": NS,
            "uid": "uid-lib1",
            "generation": 1,
            "resourceVersion": "1",  # KMock keeps it as given; kopf's JSON-patches test it
        },
        "spec": {
            "redis": {"url": server.url, "passwordSecretRef": {"name": "redis-auth", "key": "pw"}},
            "lending": {"replicas": 3},
            "limits": {"userLimit": 7},
        },
    }
    async with http.post(LI_PATH, json=li) as resp:
        assert resp.status in (200, 201), await resp.text()

    # --- create: every owned object, owned, labelled; status written through kopf.
    got = await eventually(
        lambda: condition(find(api, "libraryinstances", "lib1"), "RedisReachable")
    )
    assert got["status"] == "True", got
    sts = find(api, "statefulsets", "lib1-lending")
    assert sts["spec"]["replicas"] == 3
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "uid-lib1"
    assert find(api, "statefulsets", "lib1-shelving")["spec"]["replicas"] == 1
    assert find(api, "services", "lib1-lending-metrics")["spec"]["clusterIP"] == "None"
    assert find(api, "configmaps", "lib1-config")["data"]["BOOKSTREAM_USER_LIMIT"] == "7"
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": "BOOKSTREAM_REDIS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "pw"}},
    } in env

    status = find(api, "libraryinstances", "lib1")["status"]
    assert status["lending"]["workers"] == ["lib1-lending-0", "lib1-lending-1", "lib1-lending-2"]
    assert status["lending"]["lag"] == 10 and status["lending"]["lagSource"] == "redis"
    assert status["observedGeneration"] == 1
    assert condition(find(api, "libraryinstances", "lib1"), "Ready")["status"] == "False"

    play_statefulset_controller(api, "lib1-lending")
    play_statefulset_controller(api, "lib1-shelving")
    ready = await eventually(
        lambda: condition(find(api, "libraryinstances", "lib1"), "Ready")["status"] == "True"
    )
    assert ready, find(api, "libraryinstances", "lib1")["status"]
    # kopf puts a finalizer on every object with a timer (to stop it on deletion).
    assert find(api, "libraryinstances", "lib1")["metadata"]["finalizers"] == [
        "bookstream.io/finalizer"
    ]

    # --- scale down with entries pending on the removed ordinal 2.
    client.xreadgroup("lending", "lib1-lending-2", {KEYS.inbox("lending"): ">"}, count=4)
    await patch_li(http, "lib1", {"spec": {"lending": {"replicas": 1}}})
    await eventually(lambda: find(api, "statefulsets", "lib1-lending")["spec"]["replicas"] == 1)
    retired = await eventually(
        lambda: [e for e in events(api) if e.get("reason") == "ConsumersRetired"]
    )
    assert retired and "lib1-lending-2 (4 pending -> lib1-lending-0)" in retired[0]["message"]
    summary = client.xpending(KEYS.inbox("lending"), "lending")
    assert summary["pending"] == 4
    assert [(c["name"], c["pending"]) for c in summary["consumers"]] == [(b"lib1-lending-0", 4)]
    assert await eventually(lambda: any(e.get("reason") == "Scaled" for e in events(api)))

    # --- update: limits and image reach the ConfigMap and the pod template.
    await patch_li(http, "lib1", {"spec": {"limits": {"userLimit": 9}, "image": {"tag": "9.9"}}})
    await eventually(
        lambda: find(api, "configmaps", "lib1-config")["data"]["BOOKSTREAM_USER_LIMIT"] == "9"
    )
    sts = await eventually(
        lambda: (
            find(api, "statefulsets", "lib1-lending")["spec"]["template"]["spec"]["containers"][0][
                "image"
            ]
            == "bookstream/lending:9.9"
        )
    )
    assert sts

    # --- pause: spec changes are not applied until the annotation goes.
    await patch_li(http, "lib1", {"metadata": {"annotations": {"bookstream.io/paused": "true"}}})
    await eventually(
        lambda: (
            condition(find(api, "libraryinstances", "lib1"), "ReconciliationPaused")["status"]
            == "True"
        )
    )
    await patch_li(http, "lib1", {"spec": {"shelving": {"replicas": 4}}})
    await asyncio.sleep(1.5)  # several timer periods
    assert find(api, "statefulsets", "lib1-shelving")["spec"]["replicas"] == 1
    await patch_li(http, "lib1", {"metadata": {"annotations": {"bookstream.io/paused": None}}})
    unpaused = await eventually(
        lambda: find(api, "statefulsets", "lib1-shelving")["spec"]["replicas"] == 4
    )
    li_now = find(api, "libraryinstances", "lib1") or {}
    sts_now = find(api, "statefulsets", "lib1-shelving") or {}
    assert unpaused, json.dumps([li_now, sts_now.get("spec", {}).get("replicas")])
    assert await eventually(
        lambda: (
            condition(find(api, "libraryinstances", "lib1"), "ReconciliationPaused")["status"]
            == "False"
        )
    )

    # --- delete: the running operator stops the timer and releases its finalizer.
    async with http.delete(f"{LI_PATH}/lib1") as resp:
        assert resp.status == 200, await resp.text()
    gone = await eventually(lambda: find(api, "libraryinstances", "lib1") is None)
    assert gone, json.dumps((find(api, "libraryinstances", "lib1") or {}).get("metadata"))


async def test_unreachable_redis_is_reported_and_workloads_still_applied(
    operator: None, api: kmock.KubernetesEmulator, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    li = {
        "apiVersion": "bookstream.io/v1alpha1",
        "kind": "LibraryInstance",
        "metadata": {"name": "lib2", "namespace": NS, "uid": "uid-lib2", "resourceVersion": "1"},
        "spec": {"redis": {"url": f"unix://{tmp_path}/nothing.sock"}},
    }
    async with http.post(LI_PATH, json=li) as resp:
        assert resp.status in (200, 201)
    got = await eventually(
        lambda: condition(find(api, "libraryinstances", "lib2"), "RedisReachable")
    )
    assert got["status"] == "False" and got["reason"] == "ConnectionFailed", got
    assert condition(find(api, "libraryinstances", "lib2"), "Ready")["reason"] == "RedisUnreachable"
    assert find(api, "statefulsets", "lib2-lending")["spec"]["replicas"] == 1
    assert await eventually(lambda: any(e.get("reason") == "ConnectionFailed" for e in events(api)))
