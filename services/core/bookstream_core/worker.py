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
from redis.exceptions import ResponseError

from bookstream_core.admitting import AdmissionLoop
from bookstream_core.config import WorkerSettings
from bookstream_core.connection import UNREACHABLE, connect
from bookstream_core.consumer import StreamConsumer, sleep_or_stop
from bookstream_core.functions import CoreFunctions
from bookstream_core.keys import LibraryKeys
from bookstream_core.logging import get_logger
from bookstream_core.metrics import Metrics
from bookstream_core.redis_config import check_eviction
from bookstream_core.service import Service
from bookstream_core.streams import GAUGE_COUNTS_AT_MOST, backlog, waiting
from bookstream_core.tls import tls_failure
from bookstream_core.trouble import RedisTrouble, as_trouble
from bookstream_core.types import text

ServiceFactory = Callable[[aioredis.Redis, LibraryKeys, WorkerSettings, Metrics], Service]


class NameTaken(RuntimeError):
    """Another live worker holds this name."""


class WorkerFailed(RuntimeError):
    """The worker cannot go on (its name was taken, housekeeping kept failing): it stops
    with a non-zero exit so that its supervisor (a pod) restarts it."""


class Worker:
    def __init__(self, settings: WorkerSettings, factory: ServiceFactory, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys = LibraryKeys(settings.library)
        self.r = connect(
            settings.redis, client_name=f"bookstream-{settings.service}-{settings.name}"[:60]
        )
        self.service = factory(self.r, self.keys, settings, metrics)
        # One consumer per stream the service reads (Lending: its inbox and Shelving's
        # replies), each with its own loop; the name, lock and housekeeping are shared.
        self.consumers = [
            StreamConsumer(
                self.r, self.keys, self.service, stream, settings.name, settings.runtime, metrics
            )
            for stream in self.service.streams
        ]
        admission = self.service.admission
        self.admitting = (
            None
            if admission is None
            else AdmissionLoop(self.r, admission, settings.runtime.block_ms, self._admission_step)
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
        #: Per stream read, a Redis error that is not an entry's fault: one consumer's
        #: success must not end another's trouble (breaker: the idle replies loop made a
        #: stalled inbox's worker ready again every few seconds).
        self._troubles: dict[str, str] = {}
        self._housekeeping_failing: str | None = None
        self._need_prepare = False
        self._preparing = asyncio.Lock()
        self.failure: str | None = None  # why the worker stopped on its own, if it did
        self._labels = {"library": settings.library, "service": settings.service}

    @property
    def ready(self) -> bool:
        return (
            self._reachable
            and self._holds_name
            and not self._troubles
            and self._housekeeping_failing is None
            and (self.admitting is None or self.admitting.failing is None)
        )

    def _set_ready(self) -> None:
        self.metrics.ready.labels(**self._labels).set(1 if self.ready else 0)

    async def start(self) -> None:
        """Take the name and prepare the group; raises NameTaken, UnsafeRedis."""
        await check_eviction(self.r)
        await self.core.load()
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
        await self._prepare()
        self._set_ready()
        self.log.info("worker started", redis=self.settings.redis.describe())

    async def _prepare(self) -> None:
        """Functions loaded, every stream and group there (again after Redis lost them)."""
        async with self._preparing:
            await self.core.load()
            await self.service.load()
            for consumer in self.consumers:
                await consumer.prepare()
            self._need_prepare = False

    async def _prepare_again(self) -> None:
        """After Redis lost them (restarted empty): whichever loop noticed first."""
        await self._prepare()
        self.log.warning("functions and groups prepared again")

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; sets ``failure`` when the worker had to stop itself."""
        housekeeping = asyncio.create_task(self._supervised(stop))
        try:
            async with asyncio.TaskGroup() as loops:
                for consumer in self.consumers:
                    loops.create_task(self._consume(consumer, stop))
                if self.admitting is not None:
                    loops.create_task(self.admitting.run(stop))
        finally:
            stop.set()
            try:
                await housekeeping
            except WorkerFailed as exc:
                self.failure = str(exc)
            except Exception as exc:  # a bug must still stop the process, not hide
                self.log.exception("housekeeping crashed")
                self.failure = f"housekeeping crashed: {exc!r}"
            await self._release()

    async def _supervised(self, stop: asyncio.Event) -> None:
        """Housekeeping that ends for any reason ends the worker: never a live process
        with a dead task."""
        try:
            await self._housekeeping(stop)
        finally:
            stop.set()

    async def _consume(self, consumer: StreamConsumer, stop: asyncio.Event) -> None:
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
                    if self._need_prepare:
                        await self._prepare_again()
                    await consumer.retry_refused()
                    if not pending_drained:
                        await consumer.drain_own_pending()
                        pending_drained = True
                    entries = await consumer.read()
                    if entries:
                        task = consumer.handle_keeping(entries)
                        in_flight.append(asyncio.create_task(task))
                    while in_flight and (len(in_flight) >= limit or not entries):
                        await in_flight.popleft()
                    if not self._reachable:
                        self._back_online()
                    if consumer.stream in self._troubles:
                        self._trouble_over(consumer.stream)
                    backoff = 0.1
                except (*UNREACHABLE, RedisTrouble, ResponseError) as exc:
                    await _settle(in_flight)
                    if isinstance(exc, UNREACHABLE):
                        self._went_offline(exc)
                        # A batch read before the cut may not have been applied: re-read
                        # what this name holds once Redis is back, rather than wait to claim.
                        pending_drained = False
                    else:
                        # Refused batches are kept (consumer.refused) and applied again as
                        # they are: no re-read, so no delivery is counted for the trouble.
                        self._in_trouble(consumer.stream, as_trouble(exc))
                    backoff = min(backoff * 2, 5.0)
                    await sleep_or_stop(stop, backoff * random.uniform(0.5, 1.0))
        finally:
            # Stopping: the batches already sent finish (or fail and stay pending).
            await _settle(in_flight)

    async def _admission_step(self, problem: RedisTrouble | None) -> None:
        """Before each admission call (``None``) and after its trouble: the shared state."""
        if problem is not None and problem.lost_state:
            self._need_prepare = True
        self._set_ready()  # the loop's own trouble began or ended (a gauge: cheap)
        if problem is None and self._need_prepare:
            await self._prepare_again()

    def _in_trouble(self, stream: str, problem: RedisTrouble) -> None:
        """Redis refuses the work for a reason that is not an entry's (OOM, NOPERM, lost
        functions...): not ready, the batch stays pending, retried with backoff."""
        if problem.lost_state:
            self._need_prepare = True
        if stream not in self._troubles:
            self._troubles[stream] = str(problem)[:300]
            self._set_ready()
            self.log.error(
                "redis refuses the work, retrying", stream=stream, error=self._troubles[stream]
            )

    def _trouble_over(self, stream: str) -> None:
        error = self._troubles.pop(stream)
        self.log.warning("redis accepts the work again", stream=stream, error=error)
        self._set_ready()

    def _went_offline(self, exc: BaseException) -> None:
        if self._reachable:
            self._reachable = False
            self._set_ready()
            self.log.warning("redis unreachable, retrying", error=self.why_unreachable(exc))

    def why_unreachable(self, exc: BaseException) -> str:
        """A failed TLS handshake in one clear line; else redis-py's own words."""
        return tls_failure(exc, self.settings.redis) or str(exc) or type(exc).__name__

    def _back_online(self) -> None:
        self._reachable = True
        self._set_ready()
        self.metrics.reconnects.labels(**self._labels).inc()
        # The same level as the line that said it was gone, so the two always pair up.
        self.log.warning("redis reachable again")

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Renew the name, trim, claim, retire gone consumers, and the service's own work.

        Supervised: a failing step is logged and retried; if the steps keep failing for
        ``give_up_s`` (not counting time without Redis), WorkerFailed stops the worker."""
        rt = self.settings.runtime
        last_claim = last_trim = 0.0
        renew_every = rt.lock_ttl_ms / 3000
        failing_since: float | None = None
        while not await sleep_or_stop(stop, min(renew_every, 1.0)):
            try:
                await self._renew()
                for consumer in self.consumers:
                    await consumer.touch_refused()
                now = time.monotonic()
                if now - last_trim >= rt.trim_interval_ms / 1000:
                    # Redis may be reconfigured under a running worker: evicting is as
                    # unsafe now as at start (not ready, then exit 1 after give_up_s).
                    await check_eviction(self.r)
                    for consumer in self.consumers:
                        await self.core.trim(consumer.stream)
                    await self._update_gauges()
                    last_trim = now
                if now - last_claim >= rt.claim_interval_ms / 1000:
                    for consumer in self.consumers:
                        await consumer.claim()
                        await consumer.retire_gone_consumers(
                            lambda name: self.keys.worker_lock(self.settings.service, name)
                        )
                    await self.service.tend()
                    last_claim = now
                if not self._reachable:
                    self._back_online()
                if failing_since is not None:
                    failing_since = None
                    self._housekeeping_failing = None
                    self._set_ready()
                    self.log.warning("housekeeping works again")
            except UNREACHABLE as exc:
                self._went_offline(exc)
            except WorkerFailed:
                raise
            except Exception as exc:
                problem = as_trouble(exc) if isinstance(exc, ResponseError | RedisTrouble) else exc
                if isinstance(problem, RedisTrouble) and problem.lost_state:
                    self._need_prepare = True
                if failing_since is None:
                    failing_since = time.monotonic()
                    self._housekeeping_failing = str(problem)[:300] or type(exc).__name__
                    self._set_ready()
                    self.log.error(
                        "housekeeping failed, retrying",
                        error=self._housekeeping_failing,
                        exc_info=not isinstance(exc, ResponseError | RedisTrouble),
                    )
                elif time.monotonic() - failing_since > rt.give_up_s:
                    raise WorkerFailed(
                        f"housekeeping failed for {rt.give_up_s:.0f} s: "
                        f"{self._housekeeping_failing}"
                    ) from exc

    async def _renew(self) -> None:
        ok = await self.core.lock_renew(
            self.lock_key, self.lock_value, self.settings.runtime.lock_ttl_ms
        )
        if not ok:
            # Another worker runs under this name (started with --force, or this one was
            # frozen past its lock's TTL): stop at once rather than share the consumer.
            self._holds_name = False
            self._set_ready()
            raise WorkerFailed(
                f"worker name {self.settings.name!r} was taken over by another worker"
            )

    async def _update_gauges(self) -> None:
        """The service's gauges over all its streams: backlogs (and submissions not yet
        admitted) and pending entries add up, the oldest pending entry is the oldest."""
        lag: float = 0.0
        pending = 0
        age = 0.0
        for consumer in self.consumers:
            stream, group = consumer.stream, consumer.group
            for info in await self.r.xinfo_groups(stream):
                if text(info["name"]) != group:
                    continue
                lag += float(await backlog(self.r, stream, info, GAUGE_COUNTS_AT_MOST))
                pending += int(info["pending"])
            oldest = (await self.r.xpending(stream, group)).get("min")
            if oldest:
                ms = int(text(oldest).split("-")[0])
                age = max(age, time.time() - ms / 1000)
        if self.service.admission is not None:  # submitted, not yet admitted: waiting too
            # A list of another type is unknown (NaN): the admission reports it, and
            # housekeeping goes on (it used to fail with it).
            queued = await waiting(self.r, self.service.admission.queue)
            lag += float(queued) if queued is not None else float("nan")
        self.metrics.lag.labels(**self._labels).set(lag)
        self.metrics.pending.labels(**self._labels).set(float(pending))
        self.metrics.oldest_pending.labels(**self._labels).set(age)
        dead = await self.r.xlen(self.keys.dead_letters(self.settings.service))
        self.metrics.dead_letter_length.labels(**self._labels).set(dead)

    async def _release(self) -> None:
        try:
            for consumer in self.consumers:
                await consumer.release_refused()
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
        with contextlib.suppress(*UNREACHABLE, RedisTrouble, ResponseError):
            await tasks.popleft()
