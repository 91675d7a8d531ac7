"""One worker's life: hold its name, consume its inbox, keep house, stop gracefully.

The worker name is held by a lock with a TTL that the worker renews, so a crashed
worker's name frees itself; ``force`` takes it anyway. Losing Redis is a state, not a
crash: the worker logs one line when Redis goes away and one when it is back, retries
with jittered backoff meanwhile, and reports not-ready in between.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import secrets
import socket
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from bookstream_core.config import WorkerSettings
from bookstream_core.connection import UNREACHABLE, connect
from bookstream_core.consumer import StreamConsumer, sleep_or_stop
from bookstream_core.functions import CoreFunctions
from bookstream_core.keys import LibraryKeys
from bookstream_core.logging import get_logger
from bookstream_core.metrics import Metrics
from bookstream_core.service import Service
from bookstream_core.streams import backlog

ServiceFactory = Callable[[aioredis.Redis, LibraryKeys, WorkerSettings, Metrics], Service]


class NameTaken(RuntimeError):
    """Another live worker holds this name."""


class Worker:
    def __init__(self, settings: WorkerSettings, factory: ServiceFactory, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys = LibraryKeys(settings.library)
        self.r = connect(
            settings.redis, client_name=f"bookstream-{settings.service}-{settings.name}"[:60]
        )
        self.service = factory(self.r, self.keys, settings, metrics)
        self.consumer = StreamConsumer(
            self.r, self.keys, self.service, settings.name, settings.runtime, metrics
        )
        self.core = CoreFunctions(self.r)
        self.lock_key = self.keys.worker_lock(settings.service, settings.name)
        self.lock_value = json.dumps(
            {
                "token": secrets.token_hex(8),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": int(time.time()),
            },
            separators=(",", ":"),
        )
        self.log = get_logger(
            service=settings.service, worker=settings.name, library=settings.library
        )
        self._reachable = True
        self._holds_name = False
        self._labels = {"library": settings.library, "service": settings.service}

    @property
    def ready(self) -> bool:
        return self._reachable and self._holds_name

    def _set_ready(self) -> None:
        self.metrics.ready.labels(**self._labels).set(1 if self.ready else 0)

    async def start(self) -> None:
        """Take the name and prepare the group; raises NameTaken."""
        await self.consumer.core.load()
        holder = await self.core.lock_acquire(
            self.lock_key, self.lock_value, self.settings.runtime.lock_ttl_ms, self.settings.force
        )
        if holder is not None:
            raise NameTaken(
                f"worker name {self.settings.name!r} is held by another {self.settings.service} "
                f"worker ({holder.decode(errors='replace')}); pick another name, wait for its "
                "lock to expire, or use -f/--force"
            )
        self._holds_name = True
        await self.consumer.prepare()
        self._set_ready()
        self.log.info("worker started", redis=self.settings.redis.describe())

    async def run(self, stop: asyncio.Event) -> None:
        housekeeping = asyncio.create_task(self._housekeeping(stop))
        try:
            await self._consume(stop)
        finally:
            stop.set()
            await housekeeping
            await self._release()

    async def _consume(self, stop: asyncio.Event) -> None:
        pending_drained = False
        backoff = 0.1
        # Batches applied but not yet finished, oldest first. With more than one in
        # flight Redis already runs batch n+1's call while this process accounts for
        # batch n and reads batch n+2, instead of the two taking turns.
        in_flight: collections.deque[asyncio.Task[None]] = collections.deque()
        limit = self.settings.runtime.in_flight
        try:
            while not stop.is_set():
                try:
                    if not pending_drained:
                        await self.consumer.drain_own_pending()
                        pending_drained = True
                    entries = await self.consumer.read()
                    if entries:
                        in_flight.append(asyncio.create_task(self.consumer.handle(entries)))
                    while in_flight and (len(in_flight) >= limit or not entries):
                        await in_flight.popleft()
                    if not self._reachable:
                        self._back_online()
                    backoff = 0.1
                except UNREACHABLE as exc:
                    await _settle(in_flight)
                    self._went_offline(exc)
                    # A batch read before the cut may not have been applied: re-read what
                    # this name holds as soon as Redis is back, rather than waiting to claim.
                    pending_drained = False
                    backoff = min(backoff * 2, 5.0)
                    await sleep_or_stop(stop, backoff * random.uniform(0.5, 1.0))
        finally:
            # Stopping: the batches already sent finish (or fail and stay pending).
            await _settle(in_flight)

    def _went_offline(self, exc: BaseException) -> None:
        if self._reachable:
            self._reachable = False
            self._set_ready()
            self.log.warning("redis unreachable, retrying", error=str(exc) or type(exc).__name__)

    def _back_online(self) -> None:
        self._reachable = True
        self._set_ready()
        self.metrics.reconnects.labels(**self._labels).inc()
        # The same level as the line that said it was gone, so the two always pair up.
        self.log.warning("redis reachable again")

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        rt = self.settings.runtime
        last_claim = last_trim = 0.0
        renew_every = rt.lock_ttl_ms / 3000
        while not await sleep_or_stop(stop, min(renew_every, 1.0)):
            try:
                await self._renew()
                now = time.monotonic()
                if now - last_trim >= rt.trim_interval_ms / 1000:
                    last_trim = now
                    await self.core.trim(self.consumer.inbox)
                    await self._update_gauges()
                if now - last_claim >= rt.claim_interval_ms / 1000:
                    last_claim = now
                    await self.consumer.claim()
                    await self.consumer.retire_gone_consumers(
                        lambda name: self.keys.worker_lock(self.settings.service, name)
                    )
                if not self._reachable:
                    self._back_online()
            except UNREACHABLE as exc:
                self._went_offline(exc)

    async def _renew(self) -> None:
        ok = await self.core.lock_renew(
            self.lock_key, self.lock_value, self.settings.runtime.lock_ttl_ms
        )
        if ok != self._holds_name:
            self._holds_name = ok
            self._set_ready()
            if not ok:
                self.log.error("worker name taken over by another worker (started with --force?)")

    async def _update_gauges(self) -> None:
        inbox, group = self.consumer.inbox, self.consumer.group
        groups = await self.r.xinfo_groups(inbox)
        for info in groups:
            name = info["name"]
            if (name.decode() if isinstance(name, bytes) else name) != group:
                continue
            lag = await backlog(self.r, inbox, info)
            self.metrics.lag.labels(**self._labels).set(
                float(lag) if lag is not None else float("nan")
            )
            self.metrics.pending.labels(**self._labels).set(float(info["pending"]))
        summary = await self.r.xpending(inbox, group)
        oldest = summary.get("min")
        age = 0.0
        if oldest:
            ms = int((oldest.decode() if isinstance(oldest, bytes) else oldest).split("-")[0])
            age = max(0.0, time.time() - ms / 1000)
        self.metrics.oldest_pending.labels(**self._labels).set(age)
        dead = await self.r.xlen(self.keys.dead_letters(self.settings.service))
        self.metrics.dead_letter_length.labels(**self._labels).set(dead)

    async def _release(self) -> None:
        try:
            if self._holds_name:
                await self.core.lock_release(self.lock_key, self.lock_value)
            self._holds_name = False
            self._set_ready()
            self.log.info("worker stopped")
        except UNREACHABLE:
            self.log.warning("worker stopped without releasing its name (Redis unreachable)")
        finally:
            await self.r.aclose()


async def _settle(tasks: collections.deque[asyncio.Task[None]]) -> None:
    """Wait for every batch still in flight; one that failed leaves its entries pending
    in this consumer's name, to be re-read (after a reconnect) or claimed."""
    while tasks:
        with contextlib.suppress(*UNREACHABLE):
            await tasks.popleft()
