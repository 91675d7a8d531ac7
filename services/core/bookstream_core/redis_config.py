"""Redis settings a library cannot live with.

A library is a system of record: a loan, a reservation or an outcome that Redis evicts
to make room is not a cache miss but a lost book, a request answered twice or a library
whose records contradict each other. So only ``maxmemory-policy noeviction`` is safe:
under memory pressure Redis then refuses writes (OOM), which workers treat as a passing
trouble (they back off and retry) rather than losing data silently.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import ResponseError


class UnsafeRedis(RuntimeError):
    """Redis is configured in a way that can lose the library's records."""


async def eviction_policy(r: aioredis.Redis) -> str | None:
    """Redis's maxmemory-policy, or None when this user may not ask (INFO refused)."""
    try:
        info = await r.info("memory")
    except ResponseError:
        return None
    policy = info.get("maxmemory_policy")
    return None if policy is None else str(policy)


def eviction_problem(policy: str | None) -> str | None:
    """One line saying why ``policy`` is unsafe, or None when it is safe (or unknown)."""
    if policy is None or policy == "noeviction":
        return None
    return (
        f"Redis evicts keys under memory pressure (maxmemory-policy {policy}): "
        "it would silently drop loans and outcomes; set maxmemory-policy noeviction"
    )


async def check_eviction(r: aioredis.Redis) -> None:
    """Raise UnsafeRedis when Redis may evict the library's keys."""
    problem = eviction_problem(await eviction_policy(r))
    if problem is not None:
        raise UnsafeRedis(problem)
