"""bs1_shelving_apply alone: fetch and reshelve count, commute, and apply once."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from bookstream_core.config import RuntimeSettings
from bookstream_core.keys import LibraryKeys
from bookstream_core.trouble import trouble
from bookstream_shelving.functions import ShelvingFunctions, ShelvingRow
from bookstream_shelving.keys import ShelvingKeys
from redis.exceptions import ResponseError

from tests.conftest import RedisServer, dump_keys, inject_fault

KEYS = LibraryKeys("t")
SK = ShelvingKeys(KEYS)


class Shelving:
    def __init__(self, r: aioredis.Redis) -> None:
        self.r = r
        self.fn = ShelvingFunctions(r, KEYS)

    async def event(
        self,
        type_: str,
        rid: str,
        eid: str,
        books: list[str],
        entry: bytes | None = None,
        fetch: str = "",
    ) -> tuple[bytes, ShelvingRow]:
        if entry is None:
            entry = await self.r.xadd(KEYS.inbox("shelving"), {"e": "{}"})
            await self.r.xreadgroup("shelving", "w1", {KEYS.inbox("shelving"): ">"})
        (row,) = await self.fn.apply(
            RuntimeSettings(retention_s=60), [(entry, type_, rid, eid, fetch, books)]
        )
        return entry, row

    async def off(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in (await self.r.hgetall(SK.off_shelf)).items()}


@pytest.fixture
async def shelving(aredis: aioredis.Redis) -> Shelving:
    await aredis.xgroup_create(KEYS.inbox("shelving"), "shelving", id="0", mkstream=True)
    return Shelving(aredis)


async def test_fetch_takes_books_off_and_answers_lending(shelving: Shelving) -> None:
    _, row = await shelving.event("fetch", "r1", "r1:fetch", ["a", "b c"])
    assert (row.type, row.status, row.books) == ("fetch", "applied", 2)
    assert await shelving.off() == {"a": 1, "b c": 1}
    (reply,) = await shelving.r.xrange(KEYS.replies)
    assert json.loads(reply[1][b"e"]) == {
        "v": 1,
        "type": "fetched",
        "id": "r1",
        "books": ["a", "b c"],
    }
    pending = await shelving.r.xpending(KEYS.inbox("shelving"), "shelving")
    assert pending["pending"] == 0


async def test_replayed_event_is_applied_once(shelving: Shelving) -> None:
    entry, _ = await shelving.event("fetch", "r1", "r1:fetch", ["a"])
    _, again = await shelving.event("fetch", "r1", "r1:fetch", ["a"], entry=entry)
    _, other_entry = await shelving.event("fetch", "r1", "r1:fetch", ["a"])
    # The same entry again is fenced by its XACK (stale); a new entry with the same
    # event id is a duplicate.
    assert again.status == "stale" and other_entry.status == "duplicate"
    assert await shelving.off() == {"a": 1}
    assert await shelving.r.xlen(KEYS.replies) == 1


async def test_reshelve_puts_books_back(shelving: Shelving) -> None:
    await shelving.event("fetch", "r1", "r1:fetch", ["a", "b"])
    _, row = await shelving.event("reshelve", "r2", "r2:reshelve", ["a"])
    assert row.status == "applied"
    assert await shelving.off() == {"b": 1}
    assert await shelving.r.xlen(KEYS.replies) == 1  # reshelving is not answered


async def test_fetch_of_a_book_still_travelling_back_commutes(shelving: Shelving) -> None:
    """A returned book fetched again before its reshelving is applied: either order
    ends with the book off the shelf exactly once."""
    await shelving.event("fetch", "r1", "r1:fetch", ["a"])
    await shelving.event("fetch", "r3", "r3:fetch", ["a"])  # overtakes r2's reshelve
    assert await shelving.off() == {"a": 2}
    await shelving.event("reshelve", "r2", "r2:reshelve", ["a"])
    assert await shelving.off() == {"a": 1}


async def test_unknown_type_is_dead_lettered(shelving: Shelving) -> None:
    _, row = await shelving.event("burn", "r1", "r1:burn", ["a"])
    assert row.status == "orphan"
    (entry,) = await shelving.r.xrange(KEYS.dead_letters("shelving"))
    assert entry[1][b"reason"] == b"unknown_type"
    assert await shelving.off() == {}


async def test_unfetch_cancels_a_fetch_not_applied_yet(shelving: Shelving) -> None:
    """Lending gave the request up before its fetch arrived: the fetch becomes a no-op."""
    _, row = await shelving.event("unfetch", "r1", "r1:unfetch", ["a"], fetch="r1:fetch")
    assert row.status == "applied"
    _, late = await shelving.event("fetch", "r1", "r1:fetch", ["a"])
    assert late.status == "duplicate"
    assert await shelving.off() == {}
    assert await shelving.r.xlen(KEYS.replies) == 0  # no "fetched" for it


async def test_unfetch_undoes_a_fetch_applied_already(shelving: Shelving) -> None:
    await shelving.event("fetch", "r1", "r1:fetch", ["a", "b"])
    await shelving.event("unfetch", "r1", "r1:unfetch", ["a", "b"], fetch="r1:fetch")
    _, again = await shelving.event("unfetch", "r1", "r1:unfetch", ["a", "b"], fetch="r1:fetch")
    assert again.status == "duplicate"
    assert await shelving.off() == {}


FAULTS = [
    ("stream", KEYS.replies),
    ("type", SK.off_shelf),
    *(("right", c) for c in ("xadd", "xack", "set", "hincrby", "hdel", "type", "xinfo")),
]


@pytest.mark.parametrize("kind", ["fetch", "reshelve", "unfetch"])
@pytest.mark.parametrize(("fault", "target"), FAULTS)
async def test_every_write_point_refuses_before_writing(
    shelving: Shelving, redis_server: RedisServer, kind: str, fault: str, target: str
) -> None:
    await shelving.event("fetch", "r0", "r0:fetch", ["a"])  # something to reshelve or undo
    r = shelving.r
    entry = await r.xadd(KEYS.inbox("shelving"), {"e": "{}"})
    await r.xreadgroup("shelving", "w1", {KEYS.inbox("shelving"): ">"})
    limited = await inject_fault(redis_server, r, fault, target)
    caller = shelving.fn if limited is None else ShelvingFunctions(limited, KEYS)
    before = await dump_keys(r, "bs:{t}:*")
    event = (entry, kind, "r0", f"r0:{kind}", "r0:fetch" if kind == "unfetch" else "", ["a"])
    try:
        with pytest.raises(ResponseError) as refused:
            await caller.apply(RuntimeSettings(retention_s=60), [event])
    finally:
        if limited is not None:
            await limited.aclose()
    assert trouble(refused.value) is not None, refused.value
    after = await dump_keys(r, "bs:{t}:*")
    assert after == before
