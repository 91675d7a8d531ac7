"""Which workers of a service are alive: each holds its name lock while it runs."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bookstream_core.keys import LibraryKeys
from bookstream_core.types import ServiceName, text

#: What a retirement leaves in a retired worker's lock (core.lua), so that the worker, if
#: it was only frozen, stops at its next renewal instead of taking its name back.
RETIRED = b"retired"


@dataclass(frozen=True, slots=True)
class Consumer:
    """A consumer of a service's group; ``alive`` while a worker holds its name."""

    name: str
    pending: int
    idle_ms: int
    alive: bool


async def consumers(r: aioredis.Redis, keys: LibraryKeys, service: ServiceName) -> list[Consumer]:
    try:
        rows = await r.xinfo_consumers(keys.inbox(service), keys.group(service))
    except ResponseError:  # no stream or no group yet: nobody ever consumed it
        return []
    names = [text(row["name"]) for row in rows]
    async with r.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(keys.worker_lock(service, name))
        locks = await pipe.execute()
    return [
        Consumer(name, int(row["pending"]), int(row["idle"]), _held(lock))
        for name, row, lock in zip(names, rows, locks, strict=True)
    ]


def _held(lock: bytes | str | None) -> bool:
    """A lock holds a worker's description, or the tombstone a retirement leaves."""
    return lock is not None and lock not in (RETIRED, RETIRED.decode())


async def served(r: aioredis.Redis, keys: LibraryKeys, service: ServiceName) -> bool:
    """Whether a live worker serves the service. Its consumers answer at once; a worker
    that holds its name but has not read yet is found by its lock (a scan, done only
    when no consumer is alive)."""
    if any(c.alive for c in await consumers(r, keys, service)):
        return True
    async for key in r.scan_iter(match=keys.worker_lock(service, "*"), count=1000):
        if _held(await r.get(key)):
            return True
    return False
