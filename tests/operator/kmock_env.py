"""KMock helpers shared by the operator's end-to-end tests (fixtures in conftest.py).

KMock (the in-memory Kubernetes API that kopf's own tests use) checks the wiring --
discovery, watching, status patches through the subresource, events, server-side
apply with its create fallback -- not Kubernetes itself: there is no controller
behind a StatefulSet, no garbage collector and no admission (no schema defaulting),
so the tests play the StatefulSet controller where readiness matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kmock
import kopf
from bookstream_core.keys import LibraryKeys
from bookstream_operator.handlers import Context, register
from bookstream_operator.kube import Kube
from bookstream_operator.reconcile import Result, reconcile
from bookstream_operator.settings import OperatorConfig

from tests.deploy import tools

NS = "books"
OTHER_NS = "shelves"
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


async def eventually(
    check: Callable[[], Any], what: str, timeout: float = 20.0, show: Callable[[], Any] = str
) -> Any:
    """The first truthy result of ``check``; fails the test (saying ``what``) on timeout.

    It asserts itself, so that no wait can be left unchecked by discarding its result.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (KeyError, TypeError, AssertionError) as exc:
            last = exc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: last {last!r}; {show()}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_operator(config: OperatorConfig) -> AsyncIterator[Context]:
    """The operator in its own thread and event loop, as it runs in its pod.

    (kopf cancels every task it did not start when it stops, so it cannot share the
    test's loop; KMock keeps serving in the test's loop while the test awaits.) Stopping
    it must end the thread without an error.
    """
    registry = kopf.OperatorRegistry()
    ctx = register(registry, config)
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    clusterwide=not config.namespaces,
                    namespaces=config.namespaces,
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
    yield ctx
    stop.set()
    for _ in range(150):
        if not thread.is_alive():
            break
        await asyncio.sleep(0.1)
    assert not thread.is_alive(), "operator did not stop"
    assert not errors, errors


async def patch_li(http: aiohttp.ClientSession, name: str, body: dict[str, Any]) -> None:
    async with http.patch(
        f"{LI_PATH}/{name}", json=body, headers={"Content-Type": "application/merge-patch+json"}
    ) as resp:
        assert resp.status == 200, await resp.text()


def play_statefulset_controller(api: kmock.KubernetesEmulator, name: str, ns: str = NS) -> None:
    """Mark a StatefulSet's pods ready, as its controller would once they pass /readyz."""
    for (res, obj_ns, obj_name), obj in api.objects.items():
        if res.plural == "statefulsets" and obj_ns == ns and obj_name == name and not obj.deleted:
            n = obj.raw["spec"]["replicas"]
            obj.patch({"status": {"replicas": n, "readyReplicas": n, "updatedReplicas": n}})


def condition(li: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((li or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def li_status(api: kmock.KubernetesEmulator, name: str, ns: str = NS) -> dict[str, Any]:
    """The stored status, checked against the CRD's status schema every time it is read."""
    status = dict((find(api, "libraryinstances", name, ns) or {}).get("status") or {})
    tools.validate_structural(tools.status_schema(), status)
    return status


def no_finalizers(api: kmock.KubernetesEmulator, name: str, ns: str = NS) -> None:
    meta = (find(api, "libraryinstances", name, ns) or {}).get("metadata") or {}
    assert not meta.get("finalizers"), meta


def operator_requests(api: kmock.KubernetesEmulator) -> set[tuple[str, str, str]]:
    """(group, resource[/subresource], verb) of every request the operator made.

    The test's own requests (aiohttp's user agent) are left out; what remains is kopf
    and lightkube, i.e. what the operator's RBAC must allow.
    """
    out: set[tuple[str, str, str]] = set()
    for req in list(api):
        if "aiohttp" in req.headers.get("User-Agent", ""):
            continue
        if req.resource is None or req.resource.plural is None:
            continue  # discovery (/api, /apis/...): allowed to everyone by system:discovery
        verb = VERBS[req.method.name, req.name is not None, req.params.get("watch")]
        resource = req.resource.plural + (f"/{req.subresource}" if req.subresource else "")
        out.add((req.resource.group or "", resource, verb))
    return out


VERBS = {
    ("GET", True, None): "get",
    ("GET", False, None): "list",
    ("GET", False, "true"): "watch",
    ("GET", True, "true"): "watch",
    ("POST", False, None): "create",
    ("PATCH", True, None): "patch",
    ("PUT", True, None): "update",
    ("DELETE", True, None): "delete",
}


async def post_li(http: aiohttp.ClientSession, body: dict[str, Any], ns: str = NS) -> None:
    path = f"/apis/bookstream.io/v1alpha1/namespaces/{ns}/libraryinstances"
    async with http.post(path, json=body) as resp:
        assert resp.status in (200, 201), await resp.text()


def instance(name: str, url: str, uid: str, ns: str = NS, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "bookstream.io/v1alpha1",
        "kind": "LibraryInstance",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "generation": 1,
            "resourceVersion": "1",  # KMock keeps it as given; kopf's JSON-patches test it
        },
        "spec": {"redis": {"url": url}, **spec},
    }


async def one_pass(
    kube: Kube,
    spec: dict[str, Any],
    *,
    name: str = "lib",
    generation: int = 1,
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    now: float = 1_000_000.0,
) -> Result:
    """One reconcile() of LibraryInstance ``name`` (uid ``uid-NAME``) in NS, as the
    operator's handlers run it; its status must fit the CRD's structural status schema."""
    result = await reconcile(
        kube,
        name=name,
        namespace=NS,
        uid=f"uid-{name}",
        generation=generation,
        spec_body=spec,
        status=status or {},
        annotations=annotations or {},
        now=now,
    )
    tools.validate_structural(tools.status_schema(), result.status)
    return result
