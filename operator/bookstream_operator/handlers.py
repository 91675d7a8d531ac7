"""kopf handlers: thin. Each one runs a reconcile pass, writes its status, posts its events.

Registered into a given registry by :func:`register` (not at import time) so that the
intervals come from the configuration built at the entry point.

No finalizer is ever added: everything the operator creates carries an ownerReference
to the LibraryInstance, so Kubernetes' garbage collector deletes it. (A finalizer
would block deleting the LibraryInstance -- and its namespace -- whenever the operator
is not running.) The delete handler is ``optional``: it logs when it sees the deletion.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import kopf

from bookstream_operator import naming
from bookstream_operator.kube import Kube
from bookstream_operator.reconcile import reconcile
from bookstream_operator.settings import OperatorConfig


@dataclass
class Context:
    """Shared by every handler (kopf's memo is copied per object; this object is not)."""

    config: OperatorConfig
    kube: Kube | None = None
    locks: defaultdict[tuple[str, str], asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )


async def _run(ctx: Context, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
    assert ctx.kube is not None, "startup handler did not run"
    namespace, name = str(body.meta.namespace), str(body.meta.name)
    async with ctx.locks[(namespace, name)]:  # timers run beside change handlers
        # kopf hands each handler the body as it was when the handler was scheduled; a
        # pass that waited for the lock would act on a stale spec. Read it fresh instead.
        current = await ctx.kube.read_instance(namespace, name)
        if current is None or (current.get("metadata") or {}).get("deletionTimestamp"):
            return
        meta = current.get("metadata") or {}
        result = await reconcile(
            ctx.kube,
            name=name,
            namespace=namespace,
            uid=str(meta.get("uid") or body.meta.uid),
            generation=meta.get("generation"),
            spec_body=current.get("spec") or {},
            status=current.get("status") or {},
            annotations=meta.get("annotations") or {},
            now=time.time(),
        )
    patch.status.update(result.status)
    for event in result.events:
        logger.info("%s: %s", event.reason, event.message)
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> Context:
    """Register the handlers; returns the context the startup handler fills in."""
    ctx = Context(config)
    resource = (naming.GROUP, naming.VERSION, naming.PLURAL)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same sources lightkube reads: the service account in a pod, else kubeconfig.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.INFO
        settings.persistence.finalizer = f"{naming.GROUP}/finalizer"  # never added: see above
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=naming.GROUP, key="last-handled-configuration"
        )
        settings.watching.server_timeout = config.watch_timeout_s
        if ctx.kube is None:
            ctx.kube = config.kube_factory()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if ctx.kube is not None:
            await ctx.kube.close()
            ctx.kube = None

    # A failed pass is retried after one interval (kopf's default would wait 60 s).
    backoff = config.interval_s

    @kopf.on.resume(*resource, registry=registry, backoff=backoff)
    @kopf.on.create(*resource, registry=registry, backoff=backoff)
    @kopf.on.update(*resource, registry=registry, backoff=backoff)
    async def changed(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        await _run(ctx, body, patch, logger)

    @kopf.timer(
        *resource,
        registry=registry,
        interval=config.interval_s,
        initial_delay=config.interval_s,
        backoff=backoff,
    )
    async def periodic(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        await _run(ctx, body, patch, logger)

    @kopf.on.delete(*resource, registry=registry, optional=True)
    async def deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        ctx.locks.pop((str(body.meta.namespace), str(body.meta.name)), None)
        logger.info("deleted: owned objects are garbage-collected through ownerReferences")

    return ctx
