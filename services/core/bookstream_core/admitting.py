"""A worker's admission loop: clients' submissions into its service's inbox.

Clients may only append to a list (the door's RPUSH); the service moves them into its
inbox stream (one atomic call each time) and reads them from there like any entry.
Every worker of the service runs this loop: the calls are atomic, so none is lost or
admitted twice whoever makes them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
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
        queue = self.admission.queue
        while not stop.is_set():
            try:
                await self.step(None)
                _, left = await self.admission.admit()
                if not left:
                    # Wait for the next submission without taking it: moving the list's
                    # last element to its own end leaves the list as it was (popping it
                    # here would lose it if this worker died before admitting it). Redis
                    # takes a timeout in seconds with decimals; redis-py's hint says int.
                    timeout: int = self.wait_s  # type: ignore[assignment]
                    await self.r.blmove(queue, queue, timeout, "RIGHT", "RIGHT")
                if self.failing is not None:
                    self.log.warning("admitting submissions again", error=self.failing)
                    self.failing = None
                    await self.step(None)
                backoff = 0.1
            except (*UNREACHABLE, RedisTrouble, ResponseError) as exc:
                # Unreachable: the consumer loops say so (one line when it goes, one back).
                if not isinstance(exc, UNREACHABLE):
                    problem = as_trouble(exc)
                    new = self.failing is None
                    self.failing = str(problem)[:300]
                    if new:
                        self.log.error("redis refuses to admit submissions, retrying",
                                       error=self.failing)  # fmt: skip
                    await self.step(problem)
                backoff = min(backoff * 2, 5.0)
                await sleep_or_stop(stop, backoff * random.uniform(0.5, 1.0))
