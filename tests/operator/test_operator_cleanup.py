"""Safe scale-down against a real redis-server, with entries held by real consumers.

A "removed worker" here is a real separate process that joins the group under a pod
name, reads entries (so they are pending on its consumer), takes its worker lock and
is killed without acknowledging: exactly what a pod of a removed ordinal leaves behind.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio as aioredis
from bookstream_core.keys import LibraryKeys
from bookstream_operator.cleanup import (
    ConsumerRetirer,
    RetirementResult,
    removed_consumers,
    survivor_for,
)

if TYPE_CHECKING:
    from conftest import RedisServer

KEYS = LibraryKeys("main")
STREAM = KEYS.inbox("lending")
GROUP = KEYS.group("lending")

HOLDER = textwrap.dedent(
    """
    import sys, redis
    url, stream, group, consumer, count, lock = sys.argv[1:7]
    r = redis.Redis.from_url(url)
    if lock != "-":
        r.set(lock, consumer, px=60_000)
    got = r.xreadgroup(group, consumer, {stream: ">"}, count=int(count))
    print(sum(len(entries) for _, entries in got), flush=True)
    """
)


def hold_pending(server: RedisServer, consumer: str, count: int, lock: bool = False) -> int:
    """A separate process reads ``count`` entries as ``consumer`` and exits without XACK."""
    lock_key = KEYS.worker_lock("lending", consumer) if lock else "-"
    out = subprocess.run(
        [sys.executable, "-c", HOLDER, server.url, STREAM, GROUP, consumer, str(count), lock_key],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return int(out.stdout.strip())


@pytest.fixture
def server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    server = redis_factory()
    client = server.client()
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    for i in range(30):
        client.xadd(STREAM, {"n": str(i)})
    return server


@pytest.fixture
async def aclient(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    yield client
    await client.aclose()


def pending_by_consumer(client: redis.Redis) -> dict[str, int]:
    summary = client.xpending(STREAM, GROUP)
    return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}


def pending_ids(client: redis.Redis) -> set[bytes]:
    rows = client.xpending_range(STREAM, GROUP, "-", "+", 1000)
    return {row["message_id"] for row in rows}


def consumers_of(client: redis.Redis) -> set[str]:
    return {c["name"].decode() for c in client.xinfo_consumers(STREAM, GROUP)}


def test_removed_consumers_are_only_this_workloads_higher_ordinals() -> None:
    names = [
        "ns.li-lending-0",
        "ns.li-lending-1",
        "ns.li-lending-2",
        "ns.li-lending-10",
        "ns.li-lending-x",
        "other-lending-3",
        "li-shelving-5",
        "ns.li-lending-02",
        "cli-worker",
    ]
    assert removed_consumers("ns", "li", "lending", 2, names) == [
        "ns.li-lending-2",
        "ns.li-lending-10",
    ]
    assert removed_consumers("ns", "li", "lending", 11, names) == []
    assert removed_consumers("ns", "li", "lending", 0, names) == [
        "ns.li-lending-0",
        "ns.li-lending-1",
        "ns.li-lending-2",
        "ns.li-lending-10",
    ]


def test_survivors_are_spread_by_ordinal() -> None:
    assert survivor_for("ns", "li", "lending", 2, "ns.li-lending-2") == "ns.li-lending-0"
    assert survivor_for("ns", "li", "lending", 2, "ns.li-lending-3") == "ns.li-lending-1"
    assert survivor_for("ns", "li", "lending", 3, "ns.li-lending-7") == "ns.li-lending-1"
    assert survivor_for("ns", "li", "lending", 0, "ns.li-lending-7") is None


async def test_scale_down_moves_pending_to_survivor_then_deletes_consumer(
    server: RedisServer, aclient: aioredis.Redis
) -> None:
    client = server.client()
    assert hold_pending(server, "ns.li-lending-0", 5) == 5
    assert hold_pending(server, "ns.li-lending-1", 4) == 4
    assert hold_pending(server, "ns.li-lending-2", 7) == 7
    before = pending_ids(client)
    held_by_2 = {
        row["message_id"]
        for row in client.xpending_range(STREAM, GROUP, "-", "+", 100, "ns.li-lending-2")
    }
    deliveries_before = {
        row["message_id"]: row["times_delivered"]
        for row in client.xpending_range(STREAM, GROUP, "-", "+", 100)
    }

    retirer = ConsumerRetirer(aclient, KEYS)
    results = await retirer.scale_down(
        "ns", "li", "lending", 2, ["ns.li-lending-0", "ns.li-lending-1", "ns.li-lending-2"]
    )

    assert [(r.consumer, r.outcome, r.moved, r.target) for r in results] == [
        ("ns.li-lending-2", RetirementResult.RETIRED, 7, "ns.li-lending-0")
    ]
    assert pending_ids(client) == before  # nothing lost, nothing acknowledged
    assert pending_by_consumer(client) == {"ns.li-lending-0": 12, "ns.li-lending-1": 4}
    assert consumers_of(client) == {"ns.li-lending-0", "ns.li-lending-1"}
    survivor_rows = client.xpending_range(STREAM, GROUP, "-", "+", 100, "ns.li-lending-0")
    assert held_by_2 <= {row["message_id"] for row in survivor_rows}
    # The move is not a delivery: the dead-letter bound still counts the same deliveries.
    for row in client.xpending_range(STREAM, GROUP, "-", "+", 100):
        assert row["times_delivered"] == deliveries_before[row["message_id"]]


async def test_moved_entries_stay_claimable_by_survivors_xautoclaim(
    server: RedisServer, aclient: aioredis.Redis
) -> None:
    client = server.client()
    hold_pending(server, "ns.li-lending-3", 6)
    # Let the entries become idle, as those of a worker that died a while ago.
    client.xclaim(STREAM, GROUP, "ns.li-lending-3", 0, list(pending_ids(client)), idle=60_000)

    await ConsumerRetirer(aclient, KEYS).retire("lending", "ns.li-lending-3", "ns.li-lending-0")

    # The idle time was kept, so a worker's XAUTOCLAIM with a 10 s bound takes them at once.
    _, claimed, _ = client.xautoclaim(STREAM, GROUP, "ns.li-lending-1", 10_000, "0-0", count=100)
    assert len(claimed) == 6


async def test_live_worker_is_left_alone_until_its_lock_expires(
    server: RedisServer, aclient: aioredis.Redis
) -> None:
    client = server.client()
    hold_pending(server, "ns.li-lending-2", 5, lock=True)  # still "draining": lock held
    retirer = ConsumerRetirer(aclient, KEYS)

    (first,) = await retirer.scale_down(
        "ns", "li", "lending", 1, ["ns.li-lending-0", "ns.li-lending-2"]
    )
    assert first.outcome is RetirementResult.ALIVE
    assert pending_by_consumer(client) == {"ns.li-lending-2": 5}
    assert "ns.li-lending-2" in consumers_of(client)

    client.delete(KEYS.worker_lock("lending", "ns.li-lending-2"))  # the lock expired
    (second,) = await retirer.scale_down(
        "ns", "li", "lending", 1, ["ns.li-lending-0", "ns.li-lending-2"]
    )
    assert second.outcome is RetirementResult.RETIRED and second.moved == 5
    assert pending_by_consumer(client) == {"ns.li-lending-0": 5}
    assert "ns.li-lending-2" not in consumers_of(client)


async def test_large_pel_is_moved_in_batches(server: RedisServer, aclient: aioredis.Redis) -> None:
    client = server.client()
    for i in range(300):
        client.xadd(STREAM, {"n": f"extra-{i}"})
    assert hold_pending(server, "ns.li-lending-5", 330) == 330

    result = await ConsumerRetirer(aclient, KEYS).retire(
        "lending", "ns.li-lending-5", "ns.li-lending-1", batch=40
    )

    assert result.outcome is RetirementResult.RETIRED and result.moved == 330
    assert pending_by_consumer(client) == {"ns.li-lending-1": 330}


async def test_scaled_to_zero_keeps_the_consumer_and_its_entries(
    server: RedisServer, aclient: aioredis.Redis
) -> None:
    client = server.client()
    hold_pending(server, "ns.li-lending-0", 3)
    (result,) = await ConsumerRetirer(aclient, KEYS).scale_down(
        "ns", "li", "lending", 0, ["ns.li-lending-0"]
    )
    assert result.outcome is RetirementResult.NO_SURVIVOR
    assert pending_by_consumer(client) == {"ns.li-lending-0": 3}


async def test_empty_removed_consumer_is_deleted_and_missing_group_is_reported(
    server: RedisServer, aclient: aioredis.Redis
) -> None:
    client = server.client()
    client.xgroup_createconsumer(STREAM, GROUP, "ns.li-lending-4")
    retirer = ConsumerRetirer(aclient, KEYS)
    result = await retirer.retire("lending", "ns.li-lending-4", "ns.li-lending-0")
    assert result.outcome is RetirementResult.RETIRED and result.moved == 0
    assert "ns.li-lending-4" not in consumers_of(client)

    other = ConsumerRetirer(aclient, LibraryKeys("nolib"))
    assert (
        await other.retire("lending", "x-lending-1", "x-lending-0")
    ).outcome is RetirementResult.GONE


async def test_repeated_scale_up_and_down_cycles_lose_nothing(
    server: RedisServer, aclient: aioredis.Redis
) -> None:
    """The same ordinal comes back, reads, is removed again: every entry ends on a survivor."""
    client = server.client()
    retirer = ConsumerRetirer(aclient, KEYS)
    for _ in range(5):
        hold_pending(server, "ns.li-lending-2", 2)
        await retirer.retire("lending", "ns.li-lending-2", "ns.li-lending-0")
    assert pending_by_consumer(client) == {"ns.li-lending-0": 10}
    assert "ns.li-lending-2" not in consumers_of(client)


def test_worker_names_of_other_namespaces_are_never_touched_and_legacy_ones_retired() -> None:
    """Worker names carry the namespace: another namespace's LibraryInstance of the same name
    is not this workload. Bare pod names (an older operator's workers) are all removed."""
    names = ["ns.li-lending-0", "other.li-lending-3", "li-lending-0", "li-lending-4"]
    assert removed_consumers("ns", "li", "lending", 1, names) == ["li-lending-0", "li-lending-4"]
    assert survivor_for("ns", "li", "lending", 1, "li-lending-4") == "ns.li-lending-0"
    assert survivor_for("ns", "li", "lending", 3, "li-lending-4") == "ns.li-lending-1"
