"""bookstream_core_v1 alone: dead letters, worker-name locks, trimming."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from bookstream_core.events import decode_outcome
from bookstream_core.functions import CoreFunctions, FunctionsUnavailable, HandedOver, HandOver
from bookstream_core.keys import LibraryKeys
from bookstream_core.trouble import trouble
from redis.exceptions import ResponseError

from tests.conftest import RedisServer, client_without, dead_letter_row, dump_keys

KEYS = LibraryKeys("t")
INBOX = KEYS.inbox("lending")


async def _pending_entry(r: aioredis.Redis, fields: dict[str, str]) -> bytes:
    entry: bytes = await r.xadd(INBOX, fields)  # type: ignore[arg-type]
    await r.xreadgroup("lending", "w1", {INBOX: ">"})
    return entry


async def _dead_letter(
    core: CoreFunctions, *rows: list[bytes | str | int], inbox: str = INBOX, group: str = "lending"
) -> list[int]:
    return await core.dead_letter(
        inbox,
        KEYS.dead_letters("lending"),
        KEYS.domain_events,
        INBOX,
        group=group,
        retention_s=60,
        maxlen=1000,
        outcome_prefix=KEYS.outcome(""),
        schema_version=1,
        rows=[dead_letter_row(row) for row in rows],
    )


async def test_dead_letter_moves_the_entry_aside_and_answers_once(aredis: aioredis.Redis) -> None:
    await aredis.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    core = CoreFunctions(aredis)
    raw = '{"v":9,"type":"request","id":"r1"}'
    entry = await _pending_entry(aredis, {"e": raw})
    answered = await _dead_letter(
        core, [entry, "invalid_event: v", 1, "r1", "request", "", "", 1, 1, "e", raw]
    )
    assert answered == [1]
    ((_, dead),) = await aredis.xrange(KEYS.dead_letters("lending"))
    assert dead[b"reason"] == b"invalid_event: v"
    assert dead[b"entry"] == entry
    assert dead[b"f.e"] == raw.encode()
    outcome = decode_outcome(await aredis.get(KEYS.outcome("r1")))
    assert (outcome.status, outcome.reason) == ("rejected", "invalid_event: v")
    assert (await aredis.xpending(INBOX, "lending"))["pending"] == 0

    # A second bad entry with the same id does not overwrite the first answer.
    entry2 = await _pending_entry(aredis, {"e": "x"})
    assert await _dead_letter(
        core, [entry2, "other", 1, "r1", "request", "", "", 1, 1, "e", "x"]
    ) == [0]
    assert decode_outcome(await aredis.get(KEYS.outcome("r1"))).reason == "invalid_event: v"


async def test_dead_letter_does_not_answer_a_request_in_flight(aredis: aioredis.Redis) -> None:
    await aredis.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    guard = "bs:{t}:lending:req:r1"
    await aredis.hset(guard, "user", "ann")
    entry = await _pending_entry(aredis, {"junk": "1"})
    row: list[bytes | str | int] = [
        entry,
        "missing_field",
        1,
        "r1",
        "request",
        guard,
        "",
        1,
        1,
        "junk",
        "1",
    ]
    assert await _dead_letter(CoreFunctions(aredis), row) == [0]
    assert await aredis.get(KEYS.outcome("r1")) is None


async def test_dead_letter_skips_an_entry_no_longer_pending(aredis: aioredis.Redis) -> None:
    """A stale call (another worker already dealt with the entry) writes nothing."""
    await aredis.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    entry = await _pending_entry(aredis, {"e": "x"})
    await aredis.xack(INBOX, "lending", entry)
    row: list[bytes | str | int] = [entry, "bad", 1, "r9", "request", "", "", 1, 1, "e", "x"]
    assert await _dead_letter(CoreFunctions(aredis), row) == [-1]
    assert await aredis.xlen(KEYS.dead_letters("lending")) == 0
    assert await aredis.get(KEYS.outcome("r9")) is None


async def test_dead_letter_keeps_at_most_16_fields_of_a_huge_entry(aredis: aioredis.Redis) -> None:
    """An entry of thousands of fields once broke the call (Lua's unpack limit)."""
    await aredis.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    fields = {f"f{n}": "v" for n in range(5000)}
    entry = await _pending_entry(aredis, fields)
    pairs: list[bytes | str | int] = []
    for name, value in fields.items():  # more than the function keeps: it caps them
        pairs.extend([name, value])
    row: list[bytes | str | int] = [entry, "too_many_fields", 1, "", "", "", "", 5000, 5000, *pairs]
    assert await _dead_letter(CoreFunctions(aredis), row) == [0]
    ((_, dead),) = await aredis.xrange(KEYS.dead_letters("lending"))
    assert dead[b"fields"] == b"5000"
    assert len([k for k in dead if k.startswith(b"f.")]) == 16


async def test_a_fetch_set_aside_is_reported_to_lending(aredis: aioredis.Redis) -> None:
    shelving = KEYS.inbox("shelving")
    await aredis.xgroup_create(shelving, "shelving", id="0", mkstream=True)
    entry: bytes = await aredis.xadd(shelving, {"e": "{}"})
    await aredis.xreadgroup("shelving", "w1", {shelving: ">"})
    row: list[bytes | str | int] = [entry, "too_many_deliveries", 6, "r5", "fetch", "", "", 1, 1]
    row += ["e", "{}"]
    flags = await _dead_letter(CoreFunctions(aredis), row, inbox=shelving, group="shelving")
    assert flags == [2]
    ((_, reply),) = await aredis.xrange(INBOX)
    assert json.loads(reply[b"e"]) == {
        "v": 1,
        "type": "unfetched",
        "id": "r5",
        "reason": "too_many_deliveries",
    }


async def test_lock_acquire_renew_release_force(aredis: aioredis.Redis) -> None:
    core = CoreFunctions(aredis)
    key = KEYS.worker_lock("lending", "w1")
    assert await core.lock_acquire(key, "me", 10_000, False) is None
    assert await core.lock_acquire(key, "other", 10_000, False) == b"me"
    assert await core.lock_renew(key, "me", 10_000)
    assert not await core.lock_renew(key, "other", 10_000)
    assert await core.lock_acquire(key, "other", 10_000, True) is None  # --force
    assert not await core.lock_renew(key, "me", 10_000)
    assert not await core.lock_release(key, "me")
    assert await core.lock_release(key, "other")
    assert not await aredis.exists(key)
    # Expired while cut off and nobody took it: renewing takes it back.
    assert await core.lock_renew(key, "me", 10_000)
    assert 0 < await aredis.pttl(key) <= 10_000


async def test_trim_keeps_what_a_group_still_needs(aredis: aioredis.Redis) -> None:
    core = CoreFunctions(aredis)
    ids = [await aredis.xadd(INBOX, {"n": str(i)}) for i in range(10)]
    await aredis.xgroup_create(INBOX, "lending", id="0")
    await aredis.xreadgroup("lending", "w1", {INBOX: ">"}, count=6)  # 0..5 delivered
    await aredis.xack(INBOX, "lending", *ids[:2], *ids[3:6])  # 2 still pending
    assert await core.trim(INBOX) == 2
    remaining = [e for e, _ in await aredis.xrange(INBOX)]
    assert remaining == ids[2:]
    await aredis.xack(INBOX, "lending", ids[2])
    assert await core.trim(INBOX) == 4  # everything delivered and acked
    assert [e for e, _ in await aredis.xrange(INBOX)] == ids[6:]
    # A second group that has read nothing holds everything back.
    await aredis.xgroup_create(INBOX, "audit", id="0")
    assert await core.trim(INBOX) == 0
    assert await aredis.xlen(INBOX) == 4


async def test_retire_consumer_only_removes_gone_empty_idle_consumers(
    aredis: aioredis.Redis,
) -> None:
    core = CoreFunctions(aredis)
    await aredis.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    await aredis.xadd(INBOX, {"e": "1"})
    await aredis.xreadgroup("lending", "holder", {INBOX: ">"})  # holds one entry
    await aredis.xgroup_createconsumer(INBOX, "lending", "empty")
    await aredis.xgroup_createconsumer(INBOX, "lending", "alive")
    await aredis.set(KEYS.worker_lock("lending", "alive"), "x")

    async def retire(name: str, idle: int = 0) -> bool:
        return await core.retire_consumer(
            INBOX,
            KEYS.worker_lock("lending", name),
            group="lending",
            consumer=name,
            min_idle_ms=idle,
        )

    assert not await retire("holder")  # would discard its pending entry
    assert not await retire("alive")  # its worker holds the name
    assert not await retire("empty", idle=60_000)  # active too recently
    assert not await retire("unknown")
    assert await retire("empty")
    names = {c["name"] for c in await aredis.xinfo_consumers(INBOX, "lending")}
    assert names == {b"holder", b"alive"}


@pytest.mark.parametrize("right", ["xadd", "xack", "set", "publish", "exists", "xdel"])
async def test_dead_letter_refuses_before_writing(
    aredis: aioredis.Redis, redis_server: RedisServer, right: str
) -> None:
    """(Its streams out of ids are repaired, not refused: tests/lending/test_edges.py.)"""
    await aredis.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    entry = await _pending_entry(aredis, {"e": "x"})
    limited = await client_without(redis_server, right)
    core = CoreFunctions(limited)
    before = await dump_keys(aredis, "bs:{t}:*")
    row: list[bytes | str | int] = [entry, "bad", 1, "r1", "request", "", "", 1, 1, "e", "x"]
    try:
        with pytest.raises(ResponseError) as refused:
            await _dead_letter(core, row)
    finally:
        await limited.aclose()
    assert trouble(refused.value) is not None, refused.value
    assert await dump_keys(aredis, "bs:{t}:*") == before
    assert (await aredis.xpending(INBOX, "lending"))["pending"] == 1


async def _hand_over(core: CoreFunctions, consumer: str, batch: int = 10) -> HandedOver:
    return await core.hand_over(
        INBOX,
        KEYS.worker_lock("lending", consumer),
        group="lending",
        consumer=consumer,
        survivor="w0",
        batch=batch,
    )


async def test_hand_over_moves_a_gone_consumer_s_entries_then_deletes_it(
    aredis: aioredis.Redis,
) -> None:
    core = CoreFunctions(aredis)
    assert await _hand_over(core, "w1") == (HandOver.NO_GROUP, 0, 0)
    await aredis.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    for n in range(3):
        await aredis.xadd(INBOX, {"e": str(n)})
    await aredis.xreadgroup("lending", "w1", {INBOX: ">"})
    await aredis.xreadgroup("lending", "w1", {INBOX: "0"})  # a second delivery each
    lock = KEYS.worker_lock("lending", "w1")
    await aredis.set(lock, "w1 on host")
    assert await _hand_over(core, "w1") == (HandOver.ALIVE, 0, -1)  # it still runs
    await aredis.delete(lock)
    assert await _hand_over(core, "w1", batch=2) == (HandOver.MOVED, 2, 1)
    assert await _hand_over(core, "w1", batch=2) == (HandOver.RETIRED, 1, 0)
    pending = await aredis.xpending_range(INBOX, "lending", "-", "+", 10)
    assert [(p["consumer"], p["times_delivered"]) for p in pending] == [(b"w0", 2)] * 3
    names = {c["name"] for c in await aredis.xinfo_consumers(INBOX, "lending")}
    assert names == {b"w0"}
    assert await aredis.get(lock) == b"retired"  # a frozen w1 stops at its next renewal


@pytest.mark.parametrize("right", ["xclaim", "xgroup|delconsumer", "set"])
async def test_hand_over_refuses_before_writing(
    aredis: aioredis.Redis, redis_server: RedisServer, right: str
) -> None:
    await aredis.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    await _pending_entry(aredis, {"e": "x"})
    before = await dump_keys(aredis, "bs:{t}:*")
    limited = await client_without(redis_server, right)
    try:
        with pytest.raises(ResponseError, match="BSENV NOPERM") as refused:
            await _hand_over(CoreFunctions(limited), "w1")
    finally:
        await limited.aclose()
    assert trouble(refused.value) is not None
    assert await dump_keys(aredis, "bs:{t}:*") == before


@pytest.mark.parametrize("right", ["xgroup|delconsumer", "set"])
async def test_retire_consumer_refuses_before_writing(
    aredis: aioredis.Redis, redis_server: RedisServer, right: str
) -> None:
    await aredis.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    await aredis.xgroup_createconsumer(INBOX, "lending", "gone")
    before = await dump_keys(aredis, "bs:{t}:*")
    limited = await client_without(redis_server, right)
    try:
        with pytest.raises(ResponseError, match="BSENV NOPERM"):
            await CoreFunctions(limited).retire_consumer(
                INBOX, KEYS.worker_lock("lending", "gone"), group="lending", consumer="gone",
                min_idle_ms=0,
            )  # fmt: skip
    finally:
        await limited.aclose()
    assert await dump_keys(aredis, "bs:{t}:*") == before


async def test_compare_and_set_replaces_only_what_was_read(
    aredis: aioredis.Redis, redis_server: RedisServer
) -> None:
    core = CoreFunctions(aredis)
    key = KEYS.prefix + "operator:claim"
    await aredis.set(key, "old")
    assert not await core.compare_and_set(key, "other", "new")
    assert await core.compare_and_set(key, "old", "new")
    assert await aredis.get(key) == b"new"
    limited = await client_without(redis_server, "set")
    try:
        with pytest.raises(ResponseError, match="BSENV NOPERM"):
            await CoreFunctions(limited).compare_and_set(key, "new", "newer")
    finally:
        await limited.aclose()
    assert await aredis.get(key) == b"new"


async def test_the_operator_s_calls_name_setup_when_their_function_is_missing(
    aredis: aioredis.Redis,
) -> None:
    """The operator may not load functions: it is told to run setup, never loads them."""
    await aredis.function_delete("bookstream_core_v1")
    core = CoreFunctions(aredis)
    with pytest.raises(FunctionsUnavailable, match=r"bs1_compare_and_set .*setup --library t`"):
        await core.compare_and_set(KEYS.prefix + "operator:claim", "a", "b")
    with pytest.raises(FunctionsUnavailable, match=r"bs1_hand_over .*setup --library t`"):
        await _hand_over(core, "w1")
    assert await aredis.function_list(library="bookstream_core_v1") == []
