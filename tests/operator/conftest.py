"""Fixtures of the operator's end-to-end tests: KMock as the API server, the operator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import kmock
import pytest
import yaml
from bookstream_core.functions import CoreFunctions
from bookstream_operator.kube import Kube
from bookstream_operator.settings import OperatorConfig

from tests.operator.kmock_env import NS, running_operator

if TYPE_CHECKING:
    from conftest import RedisServer


@pytest.fixture
def redis_factory(redis_factory: Callable[..., RedisServer]) -> Callable[..., RedisServer]:
    """Each Redis as ``bookstream setup`` leaves it for the operator: the core functions
    loaded (the operator calls them and may not load them)."""

    def make(**options: Any) -> RedisServer:
        server = redis_factory(**options)
        server.client().function_load(CoreFunctions.source, replace=True)
        return server

    return make


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
    # A long server-side watch timeout: KMock cannot resume a watch from a resourceVersion,
    # so an event falling between a watch's end and the next LIST would be lost.
    async with running_operator(OperatorConfig(interval_s=0.3, watch_timeout_s=600)):
        yield


@pytest.fixture
async def http(api: kmock.KubernetesEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=str(api.url)) as session:
        yield session


@pytest.fixture
async def kube(api: kmock.KubernetesEmulator) -> AsyncIterator[Kube]:
    """The operator's API client on KMock (through $KUBECONFIG, as ``api`` sets it), for
    tests that run reconcile() passes themselves (``kmock_env.one_pass``)."""
    client = Kube.from_env()
    try:
        yield client
    finally:
        await client.close()
