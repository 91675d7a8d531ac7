"""The operator process end to end: kopf against KMock, workers' Redis for real.

KMock's limits: tests/operator/kmock_env.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import kmock
import pytest
import redis
from bookstream_operator.claim import claim_key
from bookstream_operator.kube import Kube
from bookstream_operator.settings import OperatorConfig
from bookstream_operator.status import status_patch

from tests.deploy import tools
from tests.operator.kmock_env import (
    KEYS,
    LI_PATH,
    NS,
    OTHER_NS,
    condition,
    events,
    eventually,
    find,
    instance,
    li_status,
    no_finalizers,
    one_pass,
    operator_requests,
    patch_li,
    play_statefulset_controller,
    post_li,
    running_operator,
)

if TYPE_CHECKING:
    from conftest import RedisServer


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
            "metadata": {
                "name": "redis-auth",
                "namespace": NS,
                "labels": {"bookstream.io/redis-credentials": "true"},
            },
            "data": {"pw": base64.b64encode(b"s3cret").decode()},
        },
    ) as resp:
        assert resp.status in (200, 201), await resp.text()
    client.xgroup_create(KEYS.inbox("lending"), "lending", id="0", mkstream=True)
    for i in range(10):
        client.xadd(KEYS.inbox("lending"), {"n": str(i)})

    li = instance(
        "lib1",
        server.url,
        "uid-lib1",
        lending={"replicas": 3},
        limits={"userLimit": 7},
    )
    li["spec"]["redis"]["passwordSecretRef"] = {"name": "redis-auth", "key": "pw"}
    await post_li(http, li)

    def show() -> str:
        return json.dumps(find(api, "libraryinstances", "lib1"))

    # --- create: every owned object, owned, labelled; status written through the API.
    got = await eventually(
        lambda: condition(find(api, "libraryinstances", "lib1"), "RedisReachable"),
        "RedisReachable",
        show=show,
    )
    assert got["status"] == "True", got
    await eventually(lambda: find(api, "statefulsets", "lib1-shelving"), "both StatefulSets")
    sts = find(api, "statefulsets", "lib1-lending")
    assert sts is not None and sts["spec"]["replicas"] == 3
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "uid-lib1"
    assert (find(api, "statefulsets", "lib1-shelving") or {})["spec"]["replicas"] == 1
    assert (find(api, "services", "lib1-lending-metrics") or {})["spec"]["clusterIP"] == "None"
    assert (find(api, "configmaps", "lib1-config") or {})["data"]["BOOKSTREAM_USER_LIMIT"] == "7"
    # The password reaches the workers as a file from the Secret, never as a value.
    pod = sts["spec"]["template"]["spec"]
    assert {"key": "pw", "path": "password"} in pod["volumes"][-1]["secret"]["items"]
    assert "s3cret" not in json.dumps(sts)
    # The library is claimed by this LibraryInstance.
    claim = json.loads(client.get(claim_key(KEYS)) or b"{}")
    assert claim == {"uid": "uid-lib1", "namespace": NS, "name": "lib1"}

    status = li_status(api, "lib1")
    assert status["lending"]["workers"] == [f"{NS}.lib1-lending-{i}" for i in range(3)]
    assert status["lending"]["lag"] == 10 and status["lending"]["lagSource"] == "redis"
    assert status["observedGeneration"] == 1
    assert (condition(find(api, "libraryinstances", "lib1"), "Ready") or {})["status"] == "False"

    play_statefulset_controller(api, "lib1-lending")
    play_statefulset_controller(api, "lib1-shelving")
    await eventually(
        lambda: condition(find(api, "libraryinstances", "lib1"), "Ready")["status"] == "True",
        "Ready=True",
        show=show,
    )
    # Uninstall never hangs on this operator: no finalizer at all (timers would add one).
    no_finalizers(api, "lib1")

    # --- scale down with entries pending on the removed ordinal 2.
    client.xreadgroup("lending", f"{NS}.lib1-lending-2", {KEYS.inbox("lending"): ">"}, count=4)
    await patch_li(http, "lib1", {"spec": {"lending": {"replicas": 1}}})
    await eventually(
        lambda: find(api, "statefulsets", "lib1-lending")["spec"]["replicas"] == 1,
        "scale-down reaching the StatefulSet",
    )
    retired = await eventually(
        lambda: [e for e in events(api) if e.get("reason") == "ConsumersRetired"],
        "a ConsumersRetired event",
    )
    assert f"{NS}.lib1-lending-2 (4 pending -> {NS}.lib1-lending-0)" in retired[0]["message"]
    summary = client.xpending(KEYS.inbox("lending"), "lending")
    assert summary["pending"] == 4
    assert [(c["name"], c["pending"]) for c in summary["consumers"]] == [
        (f"{NS}.lib1-lending-0".encode(), 4)
    ]
    await eventually(lambda: any(e.get("reason") == "Scaled" for e in events(api)), "Scaled")

    # --- update: limits and image reach the ConfigMap and the pod template; a new
    # generation (KMock does not bump it: the test does, as the API server would) is observed.
    await patch_li(
        http,
        "lib1",
        {
            "metadata": {"generation": 2},
            "spec": {"limits": {"userLimit": 9}, "image": {"tag": "9.9"}},
        },
    )
    await eventually(
        lambda: find(api, "configmaps", "lib1-config")["data"]["BOOKSTREAM_USER_LIMIT"] == "9",
        "the new limit reaching the ConfigMap",
    )
    await eventually(
        lambda: (
            find(api, "statefulsets", "lib1-lending")["spec"]["template"]["spec"]["containers"][0][
                "image"
            ]
            == "bookstream/lending:9.9"
        ),
        "the new image reaching the pod template",
    )
    await eventually(lambda: li_status(api, "lib1")["observedGeneration"] == 2, "generation 2")

    # --- autoscaling on, then off: its status keys go away (no stale keys).
    await patch_li(http, "lib1", {"spec": {"autoscaling": {"enabled": True, "minReplicas": 1}}})
    await eventually(lambda: "autoscaler" in li_status(api, "lib1")["lending"], "autoscaler key")
    await patch_li(http, "lib1", {"spec": {"autoscaling": {"enabled": False}}})
    await eventually(
        lambda: "autoscaler" not in li_status(api, "lib1")["lending"], "autoscaler key removed"
    )

    # --- pause: spec changes are not applied until the annotation goes.
    await patch_li(http, "lib1", {"metadata": {"annotations": {"bookstream.io/paused": "true"}}})
    await eventually(
        lambda: (
            condition(find(api, "libraryinstances", "lib1"), "ReconciliationPaused")["status"]
            == "True"
        ),
        "the pause condition",
    )
    await patch_li(http, "lib1", {"spec": {"shelving": {"replicas": 4}}})
    await asyncio.sleep(1.5)  # several resync periods
    assert (find(api, "statefulsets", "lib1-shelving") or {})["spec"]["replicas"] == 1
    await patch_li(http, "lib1", {"metadata": {"annotations": {"bookstream.io/paused": None}}})
    await eventually(
        lambda: find(api, "statefulsets", "lib1-shelving")["spec"]["replicas"] == 4,
        "the unpaused change reaching the StatefulSet",
        show=show,
    )
    await eventually(
        lambda: (
            condition(find(api, "libraryinstances", "lib1"), "ReconciliationPaused")["status"]
            == "False"
        ),
        "the pause condition cleared",
    )
    no_finalizers(api, "lib1")

    # --- delete: nothing holds the object back, with or without the operator.
    async with http.delete(f"{LI_PATH}/lib1") as resp:
        assert resp.status == 200, await resp.text()
    await eventually(lambda: find(api, "libraryinstances", "lib1") is None, "deletion")

    # --- RBAC: the chart's ClusterRole, with the Role that reads Secrets in the release
    # namespace (where this instance and its Secret are), grants exactly what the operator
    # asked for.
    used = operator_requests(api)
    rendered = tools.render(namespace=NS)
    granted = grants(rendered, "ClusterRole") | grants(rendered, "Role")
    assert ("", "secrets", "get") not in grants(rendered, "ClusterRole")
    assert used <= granted, sorted(used - granted)
    assert granted - used <= NOT_EXERCISED, sorted(granted - used - NOT_EXERCISED)


def grants(objects: list[dict[str, Any]], kind: str) -> set[tuple[str, ...]]:
    return {
        (group, resource, verb)
        for role in tools.by_kind(objects, kind)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


#: Granted but not requested in this run, each for a reason the run cannot show.
NOT_EXERCISED = {
    # blockOwnerDeletion in ownerReferences needs update on the owner's finalizers
    # subresource (checked by the API server's admission, never requested).
    ("bookstream.io", "libraryinstances/finalizers", "update"),
}


async def test_unreachable_redis_is_reported_and_nothing_created(
    operator: None, api: kmock.KubernetesEmulator, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await post_li(http, instance("lib2", f"unix://{tmp_path}/nothing.sock", "uid-lib2"))
    got = await eventually(
        lambda: condition(find(api, "libraryinstances", "lib2"), "RedisReachable"),
        "RedisReachable",
    )
    assert got["status"] == "False" and got["reason"] == "ConnectionFailed", got
    assert (condition(find(api, "libraryinstances", "lib2"), "Ready") or {})[
        "reason"
    ] == "RedisUnreachable"
    status = li_status(api, "lib2")
    assert "observedGeneration" not in status  # no pass has succeeded
    assert "lag" not in status["lending"] and "streamLength" not in status["lending"]
    assert find(api, "statefulsets", "lib2-lending") is None
    await eventually(
        lambda: any(e.get("reason") == "RedisUnreachable" for e in events(api)), "the event"
    )


@pytest.mark.parametrize(
    ("code", "kind", "group", "plural", "name"),
    [
        (422, "StatefulSet", "apps", "statefulsets", "lib3-lending"),
        (403, "ConfigMap", "", "configmaps", "lib3-config"),
    ],
)
async def test_apply_errors_show_in_the_status_and_are_not_retried(
    operator: None,
    api: kmock.KubernetesEmulator,
    http: aiohttp.ClientSession,
    redis_factory: Callable[..., RedisServer],
    code: int,
    kind: str,
    group: str,
    plural: str,
    name: str,
) -> None:
    server = redis_factory()
    version = "apps/v1" if group else "v1"
    # KMock answers a patch of a missing object with 404 before any reaction: make it exist.
    res = kmock.resource(group, version.rsplit("/", 1)[-1], plural)
    api.objects[res, NS, name] = {"apiVersion": version, "kind": kind, "metadata": {"name": name}}
    url = f"/{'apis/' + group if group else 'api'}/{version.rsplit('/', 1)[-1]}"
    refused = api[f"patch {url}/namespaces/{NS}/{plural}/{name}"]
    # What the API server answers an invalid object (422) or an admission webhook (403).
    refused << code << {"kind": "Status", "code": code, "message": f"refused by test ({code})"}
    await post_li(http, instance("lib3", server.url, "uid-lib3"))
    ready = await eventually(
        lambda: (
            (condition(find(api, "libraryinstances", "lib3"), "Ready") or {}).get("reason")
            == "ApplyFailed"
            and condition(find(api, "libraryinstances", "lib3"), "Ready")
        ),
        "Ready=False, ApplyFailed",
    )
    assert ready["status"] == "False" and f"HTTP {code}" in ready["message"], ready
    assert kind in ready["message"]
    status = li_status(api, "lib3")
    assert "observedGeneration" not in status
    # Permanent: not tried again while the object stays as it is (KMock even replays the
    # create event, which kopf then hands to the create handler again).
    await asyncio.sleep(0.5)
    attempts = len(list(refused))
    await asyncio.sleep(1.5)  # five resync periods
    assert len(list(refused)) == attempts
    # A change (a new generation; or any label or annotation) is tried again, still refused.
    change = {"metadata": {"generation": 2}, "spec": {"lending": {"replicas": 2}}}
    await patch_li(http, "lib3", change)
    await eventually(lambda: len(list(refused)) > attempts, "a retry after the spec change")
    attempts = len(list(refused))
    await patch_li(http, "lib3", {"metadata": {"annotations": {"retry": "1"}}})
    await eventually(lambda: len(list(refused)) > attempts, "a retry after an annotation")
    await asyncio.sleep(0.5)
    assert "observedGeneration" not in li_status(api, "lib3")
    assert (condition(find(api, "libraryinstances", "lib3"), "Ready") or {})["status"] == "False"


async def test_a_second_instance_on_a_library_reports_conflict_and_creates_nothing(
    operator: None,
    api: kmock.KubernetesEmulator,
    http: aiohttp.ClientSession,
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    await post_li(http, instance("lib", server.url, "uid-first", ns=NS))
    await eventually(lambda: find(api, "statefulsets", "lib-lending"), "the first one's workers")
    # The same name in another namespace: same worker names, same library.
    await post_li(http, instance("lib", server.url, "uid-second", ns=OTHER_NS), ns=OTHER_NS)
    ready = await eventually(
        lambda: (
            (condition(find(api, "libraryinstances", "lib", OTHER_NS), "Ready") or {}).get("reason")
            == "Conflict"
            and condition(find(api, "libraryinstances", "lib", OTHER_NS), "Ready")
        ),
        "Ready=False, Conflict",
    )
    assert f"{NS}/lib (uid uid-first)" in ready["message"], ready
    li_status(api, "lib", OTHER_NS)
    await asyncio.sleep(1.0)
    for plural in ("statefulsets", "configmaps", "services"):
        assert not [
            key
            for key, obj in api.objects.items()
            if key[0].plural == plural and key[1] == OTHER_NS
        ], plural
    # Once the first one is gone, its claim is stale: the second takes the library over.
    async with http.delete(f"{LI_PATH}/lib") as resp:
        assert resp.status == 200, await resp.text()
    await eventually(
        lambda: find(api, "statefulsets", "lib-lending", OTHER_NS), "the second one's workers"
    )
    claim = json.loads(server.client().get(claim_key(KEYS)) or b"{}")
    assert claim["uid"] == "uid-second"


async def test_a_finalizer_left_by_an_older_operator_is_removed(
    operator: None,
    api: kmock.KubernetesEmulator,
    http: aiohttp.ClientSession,
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    li = instance("old", server.url, "uid-old")
    li["metadata"]["finalizers"] = ["bookstream.io/finalizer"]
    await post_li(http, li)
    await eventually(
        lambda: not find(api, "libraryinstances", "old")["metadata"].get("finalizers"),
        "the old finalizer removed",
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies a status patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


async def test_every_status_reconcile_produces_fits_the_crd_and_leaves_no_stale_keys(
    api: kmock.KubernetesEmulator,
    redis_factory: Callable[..., RedisServer],
    tmp_path: Path,
    kube: Kube,
) -> None:
    """Each branch of reconcile(), one after the other on one object, as the API stores it.

    Every status validates against the CRD's structural status schema; applying the merge
    patch the operator sends over the previous status gives exactly the new status (kopf's
    own ``status.kopf`` kept), so no key survives that a pass stopped producing.
    """
    server = redis_factory()
    client = server.client()
    inbox = KEYS.inbox("lending")
    client.xgroup_create(inbox, "lending", id="0", mkstream=True)
    ids = [client.xadd(inbox, {"n": str(i)}) for i in range(3)]
    client.xreadgroup("lending", f"{NS}.lib9-lending-0", {inbox: ">"}, count=1)
    stored: dict[str, Any] = {"kopf": {"progress": {}}}
    generation = 1
    seen_reasons: set[str] = set()

    async def step(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> None:
        nonlocal stored
        result = await one_pass(
            kube,
            spec,
            name="lib9",
            generation=generation,
            status=stored,
            annotations=annotations,
            now=1_000_000.0 + generation,
        )
        patched = merge_patch(stored, status_patch(stored, result.status))
        assert patched == {**result.status, "kopf": stored["kopf"]}
        tools.validate_structural(tools.status_schema(), patched)
        stored = patched
        seen_reasons.add(str((condition({"status": stored}, "Ready") or {}).get("reason")))

    base = {"redis": {"url": server.url}, "library": "main"}
    await step(base)  # success, autoscaling off
    assert stored["observedGeneration"] == 1 and stored["lending"]["lagSource"] == "redis"
    generation = 2
    await step({**base, "autoscaling": {"enabled": True}})
    assert "autoscaler" in stored["lending"]
    # Redis cannot tell the lag once an entry after the last-delivered id is deleted.
    client.xdel(inbox, ids[2])
    generation = 3
    await step(base)
    assert "autoscaler" not in stored["lending"]
    assert stored["lending"]["lagSource"] in ("redis", "counted")
    await step(base, {"bookstream.io/paused": "true"})
    assert (condition({"status": stored}, "ReconciliationPaused") or {})["status"] == "True"
    generation = 4
    await step({**base, "redis": {"url": f"unix://{tmp_path}/none.sock"}})
    assert stored["observedGeneration"] == 3  # unchanged by a failed pass
    assert "lag" not in stored["lending"] and "streamLength" not in stored["lending"]
    await step({**base, "lending": {"replicas": -1}})  # InvalidSpec
    assert stored["observedGeneration"] == 3
    # Another LibraryInstance, alive in the API, holds the library.
    other = instance("holder", server.url, "uid-holder")
    api.objects[kmock.resource("bookstream.io", "v1alpha1", "libraryinstances"), NS, "holder"] = (
        other
    )
    client.set(
        claim_key(KEYS), json.dumps({"uid": "uid-holder", "namespace": NS, "name": "holder"})
    )
    await step(base)
    assert stored["observedGeneration"] == 3
    client.delete(claim_key(KEYS))
    # The API refuses the ConfigMap (admission).
    res = kmock.resource("", "v1", "configmaps")
    api.objects[res, NS, "lib9-config"] = {"apiVersion": "v1", "kind": "ConfigMap"}
    api[f"patch /api/v1/namespaces/{NS}/configmaps/lib9-config"] << 403 << {"message": "no"}
    await step(base)
    assert stored["observedGeneration"] == 3
    assert seen_reasons >= {
        "WorkersNotReady",
        "RedisUnreachable",
        "InvalidSpec",
        "Conflict",
        "ApplyFailed",
    }, seen_reasons


async def test_stopping_mid_pass_stops_the_resync_before_closing_the_client(
    api: kmock.KubernetesEmulator,
    http: aiohttp.ClientSession,
    redis_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
    kube: Kube,
) -> None:
    """The cleanup handler cancels the resync and its passes and waits for passes in change
    handlers before it closes the API client: nothing uses a closed client, nothing errs."""
    server = redis_factory(tcp=True)
    # A Redis that accepts connections but never answers: every pass hangs in it.
    server.process.send_signal(signal.SIGSTOP)
    try:
        config = OperatorConfig(interval_s=0.2, watch_timeout_s=600)
        async with running_operator(config) as ctx:
            await post_li(http, instance("slow", server.tcp_url, "uid-slow"))
            await eventually(lambda: ctx.passes, "a resync pass started")
            await eventually(
                lambda: any(lock.locked() for lock in ctx.locks.values()), "a pass in Redis"
            )
        assert ctx.kube is None and ctx.resync is None and not ctx.passes
    finally:
        server.process.send_signal(signal.SIGCONT)
    problems = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR or "closed" in r.getMessage().lower()
    ]
    assert not problems, problems
