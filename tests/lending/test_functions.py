"""bs1_lending_apply alone, on a real Redis: each path of lending.lua, and replays."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from bookstream_core.config import DomainSettings, RuntimeSettings
from bookstream_core.events import RequestEvent, decode_outcome, encode_event
from bookstream_core.keys import LibraryKeys
from bookstream_lending.functions import LendingFunctions, LendingRow
from bookstream_lending.keys import LendingKeys

KEYS = LibraryKeys("t")
LK = LendingKeys(KEYS)
DOMAIN = DomainSettings(user_limit=5, storage_capacity=2)
RUNTIME = RuntimeSettings(retention_s=60)


def stream_of(type_: str) -> str:
    """Where a kind of event arrives: Shelving's replies on their own stream."""
    return KEYS.replies if type_ in ("fetched", "unfetched") else KEYS.inbox("lending")


class Lending:
    """Puts events in the inbox (so XACK is real) and applies them like a worker."""

    def __init__(self, r: aioredis.Redis) -> None:
        self.r = r
        self.fn = LendingFunctions(r, KEYS)

    async def setup(self) -> None:
        for stream in KEYS.streams("lending"):
            await self.r.xgroup_create(stream, "lending", id="0", mkstream=True)

    async def add(
        self, type_: str, rid: str, user: str = "", books: list[str] | None = None
    ) -> bytes:
        event = {"v": 1, "type": type_, "id": rid, "user": user, "books": books or ["x"]}
        stream = stream_of(type_)
        entry: bytes = await self.r.xadd(stream, {"e": json.dumps(event)})
        await self.r.xreadgroup("lending", "w1", {stream: ">"})
        return entry

    async def apply(
        self, *events: tuple[bytes, str, str, str, list[str]], stream: str | None = None
    ) -> list[LendingRow]:
        stream = stream or stream_of(events[0][1]) if events else KEYS.inbox("lending")
        return await self.fn.apply(stream, DOMAIN, RUNTIME, list(events))

    async def event(
        self, type_: str, rid: str, user: str = "", books: list[str] | None = None
    ) -> LendingRow:
        entry = await self.add(type_, rid, user, books)
        (row,) = await self.apply((entry, type_, rid, user, books or []))
        return row

    async def shelving_inbox(self) -> list[dict[str, object]]:
        entries = await self.r.xrange(KEYS.inbox("shelving"))
        return [json.loads(fields[b"e"]) for _, fields in entries]

    async def status(self, book: str) -> str | None:
        value = await self.r.hget(LK.book_status, book)
        return value.decode() if value else None

    async def pending(self) -> int:
        counts = [
            int((await self.r.xpending(stream, "lending"))["pending"])
            for stream in KEYS.streams("lending")
        ]
        return sum(counts)

    async def request(self, rid: str, user: str, books: list[str]) -> LendingRow:
        """A request all the way: apply it, and the shelving reply if it paged books."""
        row = await self.event("request", rid, user, books)
        if row.status == "pending":
            return await self.event("fetched", rid, "", books)
        return row

    async def return_(self, rid: str, user: str, books: list[str]) -> LendingRow:
        return await self.event("return", rid, user, books)


@pytest.fixture
async def lending(aredis: aioredis.Redis) -> Lending:
    lending = Lending(aredis)
    await lending.setup()
    return lending


async def test_request_pages_books_then_lends_them_on_the_reply(lending: Lending) -> None:
    row = await lending.event("request", "r1", "ann", ["a", "b, with comma", "a"])
    assert (row.status, row.books) == ("pending", 2)
    assert await lending.status("a") == "paged:r1"
    assert await lending.status("b, with comma") == "paged:r1"
    (fetch,) = await lending.shelving_inbox()
    assert fetch == {
        "v": 1,
        "type": "fetch",
        "id": "r1",
        "eid": "r1:fetch",
        "books": ["a", "b, with comma"],
    }

    row = await lending.event("fetched", "r1", "", ["a", "b, with comma"])
    assert (row.type, row.status) == ("fetched", "accepted")
    outcome = decode_outcome(row.outcome)
    assert outcome.lent == ["a", "b, with comma"]
    assert outcome.books_in_hand == ["a", "b, with comma"]
    assert await lending.status("a") == "lent:ann"
    assert await lending.r.smembers(LK.loans("ann")) == {b"a", b"b, with comma"}
    assert await lending.r.get(KEYS.outcome("r1")) == row.outcome
    assert not await lending.r.exists(LK.request("r1"))
    assert await lending.pending() == 0
    events = await lending.r.xrange(KEYS.domain_events)
    assert [decode_outcome(f[b"e"]) for _, f in events] == [outcome]


async def test_replayed_events_are_applied_once(lending: Lending) -> None:
    entry = await lending.add("request", "r1", "ann", ["a"])
    first = await lending.apply((entry, "request", "r1", "ann", ["a"]))
    # The same entry again (a stale batch): no longer pending, fenced by its XACK.
    again = await lending.apply((entry, "request", "r1", "ann", ["a"]))
    # The same request id in a new entry (a resubmission): a duplicate of the first.
    resubmitted = await lending.event("request", "r1", "ann", ["a"])
    assert [first[0].status, again[0].status, resubmitted.status] == [
        "pending",
        "stale",
        "duplicate",
    ]
    assert len(await lending.shelving_inbox()) == 1

    reply = await lending.add("fetched", "r1", "", ["a"])
    accepted = await lending.apply((reply, "fetched", "r1", "", []))
    replayed = await lending.apply(
        (reply, "fetched", "r1", "", []), (entry, "request", "r1", "ann", ["a"])
    )
    assert accepted[0].status == "accepted"
    assert [r.status for r in replayed] == ["stale", "stale"]
    assert (await lending.event("fetched", "r1")).status == "duplicate"
    assert (await lending.event("request", "r1", "ann", ["a"])).status == "duplicate"
    assert await lending.r.smembers(LK.loans("ann")) == {b"a"}
    assert await lending.r.xlen(KEYS.domain_events) == 1

    ret = await lending.add("return", "r2", "ann", ["a"])
    assert (await lending.apply((ret, "return", "r2", "ann", ["a"])))[0].status == "processed"
    assert (await lending.apply((ret, "return", "r2", "ann", ["a"])))[0].status == "stale"
    assert (await lending.event("return", "r2", "ann", ["a"])).status == "duplicate"
    assert await lending.r.smembers(LK.storage) == {b"a"}


async def test_a_return_with_the_id_of_a_request_in_flight_is_a_duplicate(lending: Lending) -> None:
    await lending.event("request", "r1", "ann", ["a"])
    row = await lending.event("return", "r1", "ann", ["a"])
    assert row.status == "duplicate"


async def test_unavailable_books_and_partial_grants(lending: Lending) -> None:
    await lending.request("r1", "ann", ["a"])
    row = await lending.event("request", "r2", "bob", ["b"])  # b now paged for r2
    assert row.status == "pending"
    row = await lending.request("r3", "bob", ["a", "b", "c"])
    outcome = decode_outcome(row.outcome)
    assert outcome.status == "accepted" and outcome.lent == ["c"]
    assert {(u.book, u.reason) for u in outcome.unavailable} == {("a", "lent"), ("b", "reserved")}
    row = await lending.request("r4", "ann", ["a"])
    outcome = decode_outcome(row.outcome)
    assert (outcome.status, outcome.reason) == ("denied", "none_available")
    assert [(u.book, u.reason) for u in outcome.unavailable] == [("a", "held_by_you")]


async def test_limit_is_checked_before_anything_moves(lending: Lending) -> None:
    await lending.request("r1", "ann", ["a", "b", "c", "d"])
    row = await lending.event("request", "r2", "ann", ["e", "f"])
    outcome = decode_outcome(row.outcome)
    assert (outcome.status, outcome.reason, outcome.lent) == ("denied", "limit", [])
    assert await lending.status("e") is None
    assert len(await lending.shelving_inbox()) == 1  # only r1's fetch


async def test_limit_at_decision_time_rolls_every_reservation_back(lending: Lending) -> None:
    # Fill the storage with two returned books, then hold three books.
    await lending.request("r0", "zed", ["s1", "s2"])
    await lending.return_("r0b", "zed", ["s1", "s2"])
    assert await lending.r.smembers(LK.storage) == {b"s1", b"s2"}
    await lending.request("r1", "ann", ["a", "b", "c"])
    # Two requests in flight at once; together they exceed the limit.
    assert (await lending.event("request", "r2", "ann", ["d", "e"])).status == "pending"
    assert (await lending.event("request", "r3", "ann", ["s1", "f"])).status == "pending"
    assert await lending.status("s1") == "held:r3"
    # The storage refills meanwhile, so s1 no longer fits back into it.
    await lending.request("r4", "bob", ["g"])
    await lending.return_("r4b", "bob", ["g"])
    assert await lending.r.scard(LK.storage) == 2

    assert decode_outcome((await lending.event("fetched", "r2")).outcome).status == "accepted"
    denied = decode_outcome((await lending.event("fetched", "r3")).outcome)
    assert (denied.status, denied.reason, denied.lent) == ("denied", "limit", [])
    assert denied.books_in_hand == ["a", "b", "c", "d", "e"]
    for book in ("s1", "f"):
        assert await lending.status(book) is None
    rollback = (await lending.shelving_inbox())[-1]
    assert rollback == {
        "v": 1,
        "type": "reshelve",
        "id": "r3",
        "eid": "r3:rollback",
        "books": ["s1", "f"],
    }
    assert await lending.r.scard(LK.storage) == 2


async def test_rollback_puts_storage_books_back_when_there_is_room(lending: Lending) -> None:
    await lending.request("r0", "zed", ["s1"])
    await lending.return_("r0b", "zed", ["s1"])
    await lending.request("r1", "ann", ["a", "b", "c"])
    assert (await lending.event("request", "r2", "ann", ["x"])).status == "pending"
    assert (await lending.event("request", "r3", "ann", ["s1", "y"])).status == "pending"
    await lending.event("fetched", "r2")
    denied = decode_outcome((await lending.event("fetched", "r3")).outcome)
    assert denied.reason == "limit"
    assert await lending.status("s1") == "storage"
    assert await lending.r.smembers(LK.storage) == {b"s1"}
    assert (await lending.shelving_inbox())[-1]["books"] == ["y"]


async def test_request_served_from_storage_needs_no_fetch(lending: Lending) -> None:
    await lending.request("r0", "zed", ["s1"])
    await lending.return_("r0b", "zed", ["s1"])
    before = len(await lending.shelving_inbox())
    row = await lending.event("request", "r1", "ann", ["s1"])
    assert row.status == "accepted"
    assert len(await lending.shelving_inbox()) == before
    assert await lending.r.scard(LK.storage) == 0


async def test_returns_refill_storage_up_to_capacity_and_reshelve_the_rest(
    lending: Lending,
) -> None:
    await lending.request("r1", "ann", ["a", "b", "c"])
    row = await lending.return_("r2", "ann", ["a", "b", "c", "zz"])
    outcome = decode_outcome(row.outcome)
    assert (outcome.status, outcome.returned, outcome.not_held) == (
        "processed",
        ["a", "b", "c"],
        ["zz"],
    )
    assert await lending.r.smembers(LK.storage) == {b"a", b"b"}
    assert await lending.status("c") is None
    assert (await lending.shelving_inbox())[-1] == {
        "v": 1,
        "type": "reshelve",
        "id": "r2",
        "eid": "r2:reshelve",
        "books": ["c"],
    }
    assert not await lending.r.sismember(LK.borrowers, "ann")


async def test_return_of_books_not_held_is_denied(lending: Lending) -> None:
    await lending.request("r1", "ann", ["a"])
    outcome = decode_outcome((await lending.return_("r2", "bob", ["a"])).outcome)
    assert (outcome.status, outcome.reason, outcome.not_held) == ("denied", "not_held", ["a"])
    assert await lending.status("a") == "lent:ann"


async def test_reply_for_an_unknown_request_is_dead_lettered(lending: Lending) -> None:
    row = await lending.event("fetched", "ghost", "", ["a"])
    assert (row.status, row.reason) == ("orphan", "unknown_request")
    (entry,) = await lending.r.xrange(KEYS.dead_letters("lending"))
    assert entry[1][b"reason"] == b"unknown_request"
    assert await lending.pending() == 0


async def test_outcome_is_published_to_subscribers(lending: Lending) -> None:
    async with lending.r.pubsub() as pubsub:
        await pubsub.subscribe(KEYS.outcome("r1"))
        await pubsub.get_message(timeout=1)  # subscribe confirmation
        await lending.request("r1", "ann", ["a"])
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None
    assert decode_outcome(message["data"]).lent == ["a"]


async def publishes(r: aioredis.Redis) -> int:
    stats = await r.info("commandstats")
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


async def test_outcomes_are_published_only_to_listeners(lending: Lending) -> None:
    """One call, three outcomes (returns of books nobody holds: answered at once): only the
    one a client listens for is PUBLISHed; a pattern listener (like the bench's latency
    receiver) gets every one."""
    books = {"r1": ["a"], "r2": ["b"], "r3": ["c"]}
    entries = [await lending.add("return", rid, "ann", bs) for rid, bs in books.items()]
    await lending.r.config_resetstat()
    async with lending.r.pubsub() as pubsub:
        await pubsub.subscribe(KEYS.outcome("r2"))
        await pubsub.get_message(timeout=1)  # subscribe confirmation
        await lending.apply(
            *(
                (e, "return", rid, "ann", bs)
                for e, (rid, bs) in zip(entries, books.items(), strict=True)
            )
        )
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None and message["channel"] == KEYS.outcome("r2").encode()
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
    assert await publishes(lending.r) == 1
    assert await lending.r.exists(*(KEYS.outcome(rid) for rid in books)) == 3  # all stored

    more = {"r4": ["d"], "r5": ["e"]}
    entries = [await lending.add("return", rid, "bob", bs) for rid, bs in more.items()]
    async with lending.r.pubsub() as pubsub:
        await pubsub.psubscribe(KEYS.outcome("*"))
        await pubsub.get_message(timeout=1)
        await lending.apply(
            *(
                (e, "return", rid, "bob", bs)
                for e, (rid, bs) in zip(entries, more.items(), strict=True)
            )
        )
        got = [await pubsub.get_message(ignore_subscribe_messages=True, timeout=2) for _ in more]
    assert sorted(m["channel"] for m in got if m) == [KEYS.outcome(r).encode() for r in more]
    assert await publishes(lending.r) == 3


def test_encoded_events_round_trip() -> None:
    event = RequestEvent(v=1, id="r1", user="ann", books=["a, b"])
    assert json.loads(encode_event(event)) == {
        "type": "request",
        "v": 1,
        "id": "r1",
        "user": "ann",
        "books": ["a, b"],
    }
