"""The few Kubernetes calls the operator makes besides kopf's own (see README "RBAC").

lightkube (async, typed) applies the owned objects with server-side apply under the
field manager ``bookstream-operator``: idempotent, level-based, and it removes fields
this manager stopped setting. Reading the LibraryInstance, writing its status and
posting events is left to kopf.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx2
from lightkube import AsyncClient, KubeConfig, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Secret

from bookstream_operator import naming
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


LibraryInstance = create_namespaced_resource(
    naming.GROUP, naming.VERSION, naming.KIND, naming.PLURAL
)


class SecretMissing(LookupError):
    """The Redis password Secret or its key is absent (message says which)."""


@dataclass(frozen=True, slots=True)
class WorkloadState:
    replicas: int
    ready: int
    updated: int


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
        try:
            obj = await _retrying(
                lambda: self.client.get(LibraryInstance, name, namespace=namespace)
            )
        except httpx2.HTTPStatusError as exc:
            if _status_code(exc) == 404:
                return None
            raise
        return dict(obj.to_dict())  # type: ignore[no-untyped-call]

    async def read_secret(self, namespace: str, name: str, key: str) -> str:
        try:
            secret = await _retrying(lambda: self.client.get(Secret, name, namespace=namespace))
        except httpx2.HTTPStatusError as exc:
            if _status_code(exc) == 404:
                raise SecretMissing(f"Secret {namespace}/{name} does not exist") from None
            raise
        data = cast(dict[str, str], secret.data or {})
        if key not in data:
            raise SecretMissing(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode()

    async def workload_state(self, namespace: str, name: str) -> WorkloadState | None:
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
