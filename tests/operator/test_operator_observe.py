"""Status collection against a real redis-server with real groups and pending entries."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis
from bookstream_core.keys import LibraryKeys
from bookstream_operator.observe import STATUS_CONSUMERS, collect

if TYPE_CHECKING:
    from conftest import RedisServer

KEYS = LibraryKeys("main")


@pytest.fixture
async def aclient(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_missing_stream_and_group(aclient: aioredis.Redis) -> None:
    status = await collect(aclient, KEYS, "lending")
    assert (status.stream_exists, status.group_exists) == (False, False)
    assert status.to_status()["lag"] is None and status.to_status()["lagSource"] == "unknown"
    await aclient.xadd(KEYS.inbox("lending"), {"n": "1"})
    status = await collect(aclient, KEYS, "lending")
    assert (status.stream_exists, status.group_exists, status.length) == (True, False, 1)


async def test_lag_pending_consumers_oldest_age_and_dead_letters(
    redis_server: RedisServer, aclient: aioredis.Redis
) -> None:
    stream = KEYS.inbox("shelving")
    old_id = f"{int(time.time() * 1000) - 90_000}-0"  # an entry added 90 s ago
    await aclient.xadd(stream, {"n": "old"}, id=old_id)
    for i in range(11):
        await aclient.xadd(stream, {"n": str(i)})
    await aclient.xgroup_create(stream, "shelving", id="0")
    await aclient.xreadgroup("shelving", "lib1-shelving-0", {stream: ">"}, count=3)
    await aclient.xreadgroup("shelving", "lib1-shelving-1", {stream: ">"}, count=2)
    first = await aclient.xrange(stream, count=1)
    await aclient.xack(stream, "shelving", first[0][0])  # the old one is done
    await aclient.xadd(KEYS.dead_letters("shelving"), {"reason": "unparsable"})
    await aclient.xadd(KEYS.dead_letters("shelving"), {"reason": "too many deliveries"})

    status = await collect(aclient, KEYS, "shelving")

    assert status.length == 12
    assert status.lag == 7  # 12 entries, 5 delivered
    assert status.pending == 4
    assert status.dead_letters == 2
    assert [(c.name, c.pending) for c in status.consumers] == [
        ("lib1-shelving-0", 2),
        ("lib1-shelving-1", 2),
    ]
    assert all(c.idle_ms >= 0 for c in status.consumers)
    assert status.oldest_pending_age_s is not None and status.oldest_pending_age_s < 30
    report = status.to_status()
    assert report["lagSource"] == "redis" and report["pending"] == 4
    assert report["consumers"][0] == {
        "name": "lib1-shelving-0",
        "pending": 2,
        "idleMs": status.consumers[0].idle_ms,
    }
    assert status.backlog.total == 11


async def test_oldest_pending_age_comes_from_the_entry_id(aclient: aioredis.Redis) -> None:
    stream = KEYS.inbox("lending")
    await aclient.xadd(stream, {"n": "old"}, id=f"{int(time.time() * 1000) - 90_000}-0")
    await aclient.xgroup_create(stream, "lending", id="0")
    await aclient.xreadgroup("lending", "lib1-lending-0", {stream: ">"}, count=1)
    status = await collect(aclient, KEYS, "lending")
    assert status.oldest_pending_age_s is not None and 85 < status.oldest_pending_age_s < 200


async def test_lag_unknown_after_xdel_is_counted(aclient: aioredis.Redis) -> None:
    stream = KEYS.inbox("lending")
    ids = [await aclient.xadd(stream, {"n": str(i)}) for i in range(10)]
    await aclient.xgroup_create(stream, "lending", id="0")
    await aclient.xreadgroup("lending", "lib1-lending-0", {stream: ">"}, count=2)
    await aclient.xdel(stream, ids[5])  # a tombstone past the group's position
    groups = await aclient.xinfo_groups(stream)
    assert groups[0]["lag"] is None  # what Redis 7 reports here

    status = await collect(aclient, KEYS, "lending")

    assert status.lag is None and status.estimated_lag == 7
    assert status.to_status()["lag"] == 7 and status.to_status()["lagSource"] == "counted"
    assert status.backlog.total == 9


async def test_the_status_lists_a_bounded_number_of_consumers(aclient: aioredis.Redis) -> None:
    """However many consumers a group has, the status stays small: the busiest first."""
    stream = KEYS.inbox("lending")
    await aclient.xgroup_create(stream, "lending", id="0", mkstream=True)
    for i in range(STATUS_CONSUMERS + 20):
        await aclient.xgroup_createconsumer(stream, "lending", f"c{i:03d}")
    await aclient.xadd(stream, {"n": "1"})
    await aclient.xreadgroup("lending", "c065", {stream: ">"}, count=1)
    status = (await collect(aclient, KEYS, "lending")).to_status()
    assert status["consumerCount"] == STATUS_CONSUMERS + 20
    assert len(status["consumers"]) == STATUS_CONSUMERS
    assert status["consumers"][0] == {
        "name": "c065",
        "pending": 1,
        "idleMs": status["consumers"][0]["idleMs"],
    }
