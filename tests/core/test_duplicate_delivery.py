"""The same entry delivered to two consumers at once (claimed while the first is still
processing it) is applied once: the first call acknowledges and applies it, the second
finds it no longer pending (stale) and does nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from bookstream_core.config import DomainSettings, RuntimeSettings
from bookstream_core.events import decode_outcome
from bookstream_core.keys import LibraryKeys
from bookstream_lending.functions import LendingFunctions
from bookstream_shelving.functions import ShelvingFunctions

from tests.conftest import RedisServer

KEYS = LibraryKeys("dup")
LENDING, SHELVING = KEYS.inbox("lending"), KEYS.inbox("shelving")
N = 50


async def _twice(
    first: aioredis.Redis,
    second: aioredis.Redis,
    stream: str,
    group: str,
    apply: Callable[[aioredis.Redis, bytes, dict[str, Any]], Awaitable[str]],
) -> list[list[str]]:
    """Deliver every new entry to consumer "slow", let "fast" claim it while "slow" still
    works on it, and apply it from both connections at once."""
    response = await first.xreadgroup(group, "slow", {stream: ">"})
    statuses = []
    for entry, fields in response[0][1]:
        claimed = await second.xclaim(stream, group, "fast", 0, [entry])
        assert [e for e, _ in claimed] == [entry]
        event = json.loads(fields[b"e"])
        statuses.append(
            sorted(await asyncio.gather(apply(first, entry, event), apply(second, entry, event)))
        )
    assert (await first.xpending(stream, group))["pending"] == 0
    return statuses


async def _lending(r: aioredis.Redis, entry: bytes, event: dict[str, Any]) -> str:
    args = (entry, event["type"], event["id"], event.get("user", ""), event.get("books", []))
    stream = KEYS.replies if event["type"] == "fetched" else LENDING
    rows = await LendingFunctions(r, KEYS).apply(
        stream, DomainSettings(), RuntimeSettings(), [args]
    )
    return rows[0].status


async def _shelving(r: aioredis.Redis, entry: bytes, event: dict[str, Any]) -> str:
    args = (entry, event["type"], event["id"], event["eid"], "", event["books"])
    return (await ShelvingFunctions(r, KEYS).apply(RuntimeSettings(), [args]))[0].status


async def test_an_entry_claimed_while_in_flight_is_applied_once(
    redis_server: RedisServer, aredis: aioredis.Redis
) -> None:
    second = aioredis.Redis(unix_socket_path=str(redis_server.socket))
    try:
        await aredis.xgroup_create(LENDING, "lending", id="0", mkstream=True)
        await aredis.xgroup_create(SHELVING, "shelving", id="0", mkstream=True)
        await aredis.xgroup_create(KEYS.replies, "lending", id="0", mkstream=True)
        for n in range(N):
            event = {"v": 1, "type": "request", "id": f"r{n}", "user": f"u{n}", "books": [f"b{n}"]}
            await aredis.xadd(LENDING, {"e": json.dumps(event)})

        requests = await _twice(aredis, second, LENDING, "lending", _lending)
        assert requests == [["pending", "stale"]] * N
        assert await aredis.xlen(SHELVING) == N  # one fetch each, not two

        fetches = await _twice(aredis, second, SHELVING, "shelving", _shelving)
        assert fetches == [["applied", "stale"]] * N
        assert sorted(map(int, await aredis.hvals("bs:{dup}:shelving:off"))) == [1] * N
        assert await aredis.xlen(KEYS.replies) == N  # one "fetched" reply each

        replies = await _twice(aredis, second, KEYS.replies, "lending", _lending)
        assert replies == [["accepted", "stale"]] * N
        assert await aredis.xlen("bs:{dup}:events") == N  # one outcome each
        outcome = decode_outcome(await aredis.get(KEYS.outcome("r7")))
        assert outcome.lent == ["b7"] and outcome.books_in_hand == ["b7"]
    finally:
        await second.aclose()
