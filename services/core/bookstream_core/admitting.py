"""A worker's admission loop: clients' submissions into its service's inbox.

Clients may only append to a list (the door's RPUSH, then a ring of its doorbell); the
service moves them into its inbox stream (one atomic call each time) and reads them from
there like any entry.
Every worker of the service runs this loop: the calls are atomic, so none is lost or
admitted twice whoever makes them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import ResponseError

from bookstream_core.connection import UNREACHABLE
from bookstream_core.consumer import sleep_or_stop
from bookstream_core.logging import get_logger
from bookstream_core.service import Admission
from bookstream_core.trouble import RedisTrouble, as_trouble

#: Called before each admission (None) and with each new trouble: the worker's state.
Step = Callable[[RedisTrouble | None], Awaitable[None]]


class AdmissionLoop:
    def __init__(self, r: aioredis.Redis, admission: Admission, block_ms: int, step: Step) -> None:
        self.r = r
        self.admission = admission
        self.wait_s = block_ms / 1000
        self.step = step
        self.log = get_logger(queue=admission.queue)
        #: Redis's refusal while it lasts (the worker is not ready meanwhile). Kept apart
        #: from the consumer loops' trouble, so that their successes do not announce its
        #: end, nor its successes theirs.
        self.failing: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        try:
            while not stop.is_set():
                try:
                    if not pubsub.subscribed:
                        # Subscribed before admitting: a ring after this is never missed.
                        await pubsub.subscribe(self.admission.doorbell)
                    await self.step(None)
                    _, left = await self.admission.admit()
                    if not left:
                        await self._wait(pubsub)
                    if self.failing is not None:
                        self.log.warning("admitting submissions again", error=self.failing)
                        self.failing = None
                        await self.step(None)
                    backoff = 0.1
                except (*UNREACHABLE, RedisTrouble, ResponseError) as exc:
                    # A new connection and subscription next time.
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                    pubsub = self.r.pubsub(ignore_subscribe_messages=True)
                    # Unreachable: the consumer loops say so (one line when it goes, one
                    # when it is back).
                    if not isinstance(exc, UNREACHABLE):
                        await self._refused(as_trouble(exc))
                    backoff = min(backoff * 2, 5.0)
                    await sleep_or_stop(stop, backoff * random.uniform(0.5, 1.0))
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _wait(self, pubsub: PubSub) -> None:
        """Until the doorbell rings (the door rings it after each submission), or the wait
        is over: a push past the door rings nothing and waits that long at most. Not a
        blocking pop or move on the list: Redis would send its element, a client's push
        of any size, to every waiting worker (breaker: one 100 MB push, 230 MB each)."""
        ring = await pubsub.get_message(timeout=self.wait_s)
        while ring is not None:  # one admission serves every ring so far
            ring = await pubsub.get_message(timeout=0.0)

    async def _refused(self, problem: RedisTrouble) -> None:
        new = self.failing is None
        self.failing = str(problem)[:300]
        if new:
            self.log.error("redis refuses to admit submissions, retrying", error=self.failing)
        await self.step(problem)
