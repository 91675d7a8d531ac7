"""kopf handlers: thin. Each one runs a reconcile pass, writes its status, posts its events.

Registered into a given registry by :func:`register` (not at import time) so that the
intervals come from the configuration built at the entry point.

No finalizer, ever. Everything the operator creates carries an ownerReference to the
LibraryInstance, so Kubernetes' garbage collector deletes it; a finalizer would only make
deleting a LibraryInstance (and its namespace) hang whenever the operator is not running,
e.g. after ``helm uninstall`` removed it first. kopf puts a finalizer on every object that
has a ``kopf.timer`` or ``kopf.daemon`` (to stop them on deletion) and on every object
with a non-optional ``on.delete`` handler, so the periodic pass is not a kopf timer: one
operator-wide resync task (started at startup, stopped first at cleanup) runs a pass for
every LibraryInstance that a low-level ``on.event`` handler has seen (neither adds a
finalizer). A LibraryInstance that still carries the finalizer of an older operator
version loses it at the first event: kopf removes its own finalizer when no handler
needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from bookstream_operator import naming
from bookstream_operator.kube import Kube
from bookstream_operator.reconcile import reconcile
from bookstream_operator.settings import OperatorConfig
from bookstream_operator.status import status_patch

Key = tuple[str, str]
Fingerprint = tuple[Any, ...]


def fingerprint(meta: Mapping[str, Any]) -> Fingerprint:
    """What a user changes to make the operator try again: the spec (generation), a label or
    an annotation. kopf's own annotations (its progress, under the operator's prefix) are
    left out: kopf rewrites them around every handler call."""
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(f"{naming.GROUP}/") or k == naming.PAUSED_ANNOTATION
    }
    return (
        meta.get("generation"),
        tuple(sorted((meta.get("labels") or {}).items())),
        tuple(sorted(annotations.items())),
    )


log = logging.getLogger("bookstream_operator")


@dataclass
class Context:
    """Shared by every handler (kopf's memo is copied per object; this object is not)."""

    config: OperatorConfig
    kube: Kube | None = None
    locks: defaultdict[Key, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    #: LibraryInstances seen by the watch and not deleted since: what the resync visits.
    known: set[Key] = field(default_factory=set)
    #: The object (see :func:`fingerprint`) whose pass failed permanently (e.g. a 4xx from
    #: apply): passes skip it until it changes or the operator restarts.
    failed: dict[Key, Fingerprint] = field(default_factory=dict)
    resync: asyncio.Task[None] | None = None
    passes: dict[Key, asyncio.Task[None]] = field(default_factory=dict)


async def run_pass(ctx: Context, namespace: str, name: str) -> None:
    """One pass for one LibraryInstance: reconcile, write the status, post the events."""
    assert ctx.kube is not None, "startup handler did not run"
    key = (namespace, name)
    async with ctx.locks[key]:  # the resync runs beside change handlers
        # kopf hands each handler the body as it was when the handler was scheduled; a
        # pass that waited for the lock would act on a stale spec. Read it fresh instead.
        current = await ctx.kube.read_instance(namespace, name)
        if current is None or (current.get("metadata") or {}).get("deletionTimestamp"):
            return
        meta = current.get("metadata") or {}
        generation = meta.get("generation")
        if ctx.failed.get(key) == fingerprint(meta):
            return  # failed permanently as it is: wait for a change
        previous = current.get("status") or {}
        now = time.time()
        stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = await reconcile(
            ctx.kube,
            name=name,
            namespace=namespace,
            uid=str(meta.get("uid") or ""),
            generation=generation,
            spec_body=current.get("spec") or {},
            status=previous,
            annotations=meta.get("annotations") or {},
            now=now,
            tls_files=ctx.config.tls_files,
        )
        if result.permanent_failure:
            ctx.failed[key] = fingerprint(meta)
        else:
            ctx.failed.pop(key, None)
        # A merge patch keeps every key it does not mention: send null for those gone.
        await ctx.kube.patch_status(namespace, name, status_patch(previous, result.status))
    for event in result.events:
        log.info("[%s/%s] %s: %s", namespace, name, event.reason, event.message)
        await ctx.kube.post_event(current, event.type, event.reason, event.message, stamp)


async def _resync(ctx: Context) -> None:
    """Every interval, start a pass for each known LibraryInstance not already in one."""
    while True:
        for key in [k for k, t in ctx.passes.items() if t.done() and k not in ctx.known]:
            del ctx.passes[key]  # deleted objects' finished passes
        for key in sorted(ctx.known):
            task = ctx.passes.get(key)
            if task is None or task.done():
                ctx.passes[key] = asyncio.create_task(_guarded(ctx, key), name=f"pass {key}")
        await asyncio.sleep(ctx.config.interval_s)


async def _guarded(ctx: Context, key: Key) -> None:
    try:
        await run_pass(ctx, *key)
    except asyncio.CancelledError:
        raise
    except Exception:  # the next interval tries again; a crash here would stop nothing else
        log.exception("[%s/%s] periodic pass failed", *key)


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
        # Never added (see the module docstring); named so that an old one is recognised.
        settings.persistence.finalizer = f"{naming.GROUP}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=naming.GROUP, key="last-handled-configuration"
        )
        settings.watching.server_timeout = config.watch_timeout_s
        if ctx.kube is None:
            ctx.kube = config.kube_factory()
        ctx.resync = asyncio.create_task(_resync(ctx), name="bookstream resync")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        # Stop what uses the API client before closing it: the resync, then its passes,
        # then wait for change handlers still inside a pass (they hold the object's lock).
        tasks = [t for t in [ctx.resync, *ctx.passes.values()] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ctx.resync = None
        ctx.passes.clear()
        for lock in list(ctx.locks.values()):
            async with lock:
                pass
        if ctx.kube is not None:
            await ctx.kube.close()
            ctx.kube = None

    @kopf.on.event(*resource, registry=registry)
    def seen(event: kopf.RawEvent, **_: Any) -> None:
        obj = event["object"]
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event["type"] == "DELETED" or meta.get("deletionTimestamp"):
            ctx.known.discard(key)
            ctx.failed.pop(key, None)
            ctx.locks.pop(key, None)
        else:
            ctx.known.add(key)

    # A failed pass is retried after one interval (kopf's default would wait 60 s).
    backoff = config.interval_s

    @kopf.on.resume(*resource, registry=registry, backoff=backoff)
    @kopf.on.create(*resource, registry=registry, backoff=backoff)
    @kopf.on.update(*resource, registry=registry, backoff=backoff)
    async def changed(body: kopf.Body, **_: Any) -> None:
        await run_pass(ctx, str(body.meta.namespace), str(body.meta.name))

    return ctx
