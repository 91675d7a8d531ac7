"""bs1_lending_apply and bs1_lending_expire at their edges: every check happens before
the first write (forced failures leave no trace), requests that wait for shelving end
with an outcome, forged replies give their books back, rejections can be replaced."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from bookstream_core.events import decode_outcome
from bookstream_core.functions import CoreFunctions
from bookstream_core.trouble import trouble
from redis.exceptions import ResponseError

from tests.conftest import (
    MAX_ID,
    RedisServer,
    client_without,
    dead_letter_row,
    dump_keys,
    inject_fault,
)
from tests.lending.test_functions import DOMAIN, KEYS, LK, RUNTIME, Lending


@pytest.fixture
async def lending(aredis: aioredis.Redis) -> Lending:
    lending = Lending(aredis)
    await lending.setup()
    return lending


async def _snapshot(r: aioredis.Redis) -> dict[bytes, object]:
    """Everything of the library but its inboxes' pending state."""
    return await dump_keys(r, "bs:{t}:*")


@pytest.mark.parametrize("fault", ["shelving inbox out of ids", "book hash a string", "no XADD"])
async def test_a_failing_check_leaves_no_trace(
    lending: Lending, redis_server: RedisServer, fault: str
) -> None:
    r = lending.r
    await r.sadd(LK.storage, "s1")
    await r.hset(LK.book_status, "s1", "storage")
    entry = await lending.add("request", "r1", "ann", ["s1", "shelf-book"])
    caller = lending
    if fault == "shelving inbox out of ids":
        await r.xadd(KEYS.inbox("shelving"), {"e": "{}"}, id=MAX_ID)
    elif fault == "book hash a string":
        await r.rename(LK.book_status, "saved")
        await r.set(LK.book_status, "oops")
    else:
        limited = await client_without(redis_server, "xadd")
        caller = Lending(limited)
    before = await _snapshot(r)
    with pytest.raises(ResponseError, match="BSENV"):
        await caller.apply((entry, "request", "r1", "ann", ["s1", "shelf-book"]))
    assert await _snapshot(r) == before
    assert await lending.pending() == 1  # still pending: retried later, not lost
    if caller is not lending:
        await caller.r.aclose()


@pytest.mark.parametrize("damaged", ["loans", "outcome"])
async def test_an_entry_whose_own_key_is_damaged_waits_alone(
    lending: Lending, damaged: str
) -> None:
    """A key of one entry's own of the wrong type (its user's loans, its outcome) is not
    the entry's fault, nor the others': it is left pending with nothing written, and the
    entries before and after it in the batch are applied (breaker: one user's damaged key
    stopped every user). Once mended, it is applied."""
    first = await lending.add("request", "r1", "ann", ["a"])
    bad = await lending.add("request", "r2", "bob", ["b"])
    last = await lending.add("request", "r3", "cy", ["c"])
    key = LK.loans("bob") if damaged == "loans" else KEYS.outcome("r2")
    await lending.r.hset(key, "oops", "1")
    calls = [
        (first, "request", "r1", "ann", ["a"]),
        (bad, "request", "r2", "bob", ["b"]),
        (last, "request", "r3", "cy", ["c"]),
    ]
    before = await lending.r.xlen(KEYS.dead_letters("lending"))
    rows = await lending.apply(*calls)
    assert [row.status for row in rows] == ["pending", "deferred", "pending"]
    assert key in rows[1].reason and "BSENV" not in rows[1].reason
    assert await lending.status("b") is None  # nothing of r2 written
    assert (await lending.status("a"), await lending.status("c")) == ("paged:r1", "paged:r3")
    assert await lending.pending() == 1  # r2 alone
    assert await lending.r.xlen(KEYS.dead_letters("lending")) == before
    await lending.r.delete(key)
    rows = await lending.apply(*calls)
    assert [row.status for row in rows] == ["stale", "pending", "stale"]


async def test_a_request_shelving_never_answers_is_denied_and_released(lending: Lending) -> None:
    r = lending.r
    await r.sadd(LK.storage, "s1")
    await r.hset(LK.book_status, "s1", "storage")
    await lending.event("request", "r1", "ann", ["s1", "far"])
    assert await lending.fn.expire(DOMAIN, RUNTIME, deadline_ms=60_000) == []  # not yet
    (row,) = await lending.fn.expire(DOMAIN, RUNTIME, deadline_ms=0)
    assert (row.type, row.status, row.reason) == ("expired", "denied", "shelving_timeout")
    outcome = decode_outcome(await r.get(KEYS.outcome("r1")))
    assert (outcome.status, outcome.reason, outcome.lent) == ("denied", "shelving_timeout", [])
    assert await lending.status("s1") == "storage" and await lending.status("far") is None
    assert not await r.exists(LK.request("r1"))
    (unfetch,) = [e for e in await lending.shelving_inbox() if e["type"] == "unfetch"]
    assert unfetch == {
        "v": 1, "type": "unfetch", "id": "r1", "eid": "r1:unfetch", "fetch": "r1:fetch",
        "books": ["far"],
    }  # fmt: skip
    # Shelving's late reply changes nothing.
    assert (await lending.event("fetched", "r1", "", ["far"])).status == "duplicate"
    assert await lending.fn.expire(DOMAIN, RUNTIME, deadline_ms=0) == []


async def test_a_fetch_set_aside_denies_its_request(lending: Lending) -> None:
    await lending.event("request", "r1", "ann", ["far"])
    row = await lending.event("unfetched", "r1")
    assert (row.type, row.status, row.reason) == ("unfetched", "denied", "fetch_failed")
    assert await lending.status("far") is None


async def test_a_forged_reply_gives_its_books_back_to_shelving(lending: Lending) -> None:
    row = await lending.event("fetched", "ghost", "", ["x1", "x2"])
    assert (row.status, row.reason) == ("orphan", "unknown_request")
    (unfetch,) = await lending.shelving_inbox()
    assert (unfetch["type"], unfetch["fetch"], unfetch["books"]) == (
        "unfetch",
        "ghost:fetch",
        ["x1", "x2"],
    )


async def test_a_rejected_id_can_still_be_applied(lending: Lending) -> None:
    """A malformed entry answered `rejected` applied nothing; a valid event with its id
    (a retried dead letter, a corrected resubmission) is applied and replaces it."""
    inbox = KEYS.inbox("lending")
    bad = await lending.add("request", "r1", "ann", ["a"])
    row: list[bytes | str | int] = [
        bad,
        "invalid_event",
        1,
        "r1",
        "request",
        "",
        "",
        1,
        1,
        "e",
        "x",
    ]
    flags = await CoreFunctions(lending.r).dead_letter(
        inbox, KEYS.dead_letters("lending"), KEYS.domain_events, inbox,
        group="lending", retention_s=60, maxlen=100, outcome_prefix=KEYS.outcome(""),
        schema_version=1, rows=[dead_letter_row(row)],
    )  # fmt: skip
    assert flags == [1]
    assert decode_outcome(await lending.r.get(KEYS.outcome("r1"))).status == "rejected"
    assert (await lending.event("request", "r1", "ann", ["a"])).status == "pending"
    assert (await lending.event("fetched", "r1")).status == "accepted"
    assert decode_outcome(await lending.r.get(KEYS.outcome("r1"))).lent == ["a"]
    assert json.loads(await lending.r.get(KEYS.outcome("r1")))["status"] == "accepted"


# Every write point of every handler: each stream a handler appends to out of ids, each
# key it writes of the wrong type, each command it runs refused by ACL. The call must
# refuse before its first write.
# (The events and dead-letter streams are repaired instead: test_a_future_entry_in_...)
STREAM_FAULTS = [KEYS.inbox("shelving")]
TYPE_FAULTS = [LK.book_status, LK.storage, LK.borrowers, "bs:{t}:lending:inflight"]
RIGHT_FAULTS = [
    *("xadd", "xack", "hset", "hdel", "hmget", "sadd", "srem", "scard", "smembers"),
    *("zadd", "zrem", "set", "get", "exists", "del", "publish", "pubsub", "type"),
]
FAULTS = (
    [("stream", k) for k in STREAM_FAULTS]
    + [("type", k) for k in TYPE_FAULTS]
    + [("right", c) for c in RIGHT_FAULTS]
)


async def _scenario(lending: Lending, kind: str) -> tuple[bytes, str, str, str, list[str]]:
    """Set up a library in which the returned event exercises ``kind``'s writes."""
    r = lending.r
    await r.sadd(LK.storage, "s1")
    await r.hset(LK.book_status, "s1", "storage")
    if kind == "request":  # reserves a storage book, pages a shelf book, emits a fetch
        entry = await lending.add("request", "q", "ann", ["s1", "far"])
        return (entry, "request", "q", "ann", ["s1", "far"])
    await lending.event("request", "q0", "ann", ["s1", "far"])
    if kind == "fetched":  # lends both books, stores and publishes the outcome
        entry = await lending.add("fetched", "q0", "", ["far"])
        return (entry, "fetched", "q0", "", ["far"])
    if kind == "unfetched":  # gives up: storage book back, unfetch to shelving
        entry = await lending.add("unfetched", "q0")
        return (entry, "unfetched", "q0", "", [])
    await lending.event("fetched", "q0")
    # return: refills the storage (capacity 2) and reshelves the rest
    await r.sadd(LK.storage, "s2")
    await r.hset(LK.book_status, "s2", "storage")
    entry = await lending.add("return", "q1", "ann", ["s1", "far"])
    return (entry, "return", "q1", "ann", ["s1", "far"])


@pytest.mark.parametrize("kind", ["request", "fetched", "unfetched", "return"])
@pytest.mark.parametrize(("fault", "target"), FAULTS)
async def test_every_write_point_refuses_before_writing(
    lending: Lending, redis_server: RedisServer, kind: str, fault: str, target: str
) -> None:
    event = await _scenario(lending, kind)
    r = lending.r
    limited = await inject_fault(redis_server, r, fault, target)
    caller = lending if limited is None else Lending(limited)
    before = await _snapshot(r)
    try:
        with pytest.raises(ResponseError) as refused:
            await caller.apply(event)
    finally:
        if caller is not lending:
            await caller.r.aclose()
    # The worker takes it as Redis's trouble (retry), not the entry's (dead letter).
    assert trouble(refused.value) is not None, refused.value
    assert await _snapshot(r) == before
    assert await lending.pending() >= 1


@pytest.mark.parametrize("stream", [KEYS.domain_events, KEYS.dead_letters("lending")])
async def test_a_future_entry_in_a_stream_nobody_reads_is_removed(
    lending: Lending, stream: str
) -> None:
    """Nobody consumes the events or the dead letters, so no reader would ever set a
    producer's future entry aside: the call that appends deletes it and takes its ids back."""
    event = await _scenario(lending, "request")
    await lending.r.xadd(stream, {"e": "junk"}, id=MAX_ID)
    (row,) = await lending.apply(event)
    assert row.status == "pending"
    assert not await lending.r.xrange(stream, min=MAX_ID, max=MAX_ID)
    assert await lending.r.xadd(stream, {"probe": "1"})


@pytest.mark.parametrize(("kind", "stream"), [("fetched", "inbox"), ("request", "replies")])
async def test_an_event_on_the_wrong_stream_is_set_aside(
    lending: Lending, kind: str, stream: str
) -> None:
    """Shelving's replies arrive only on the stream only Shelving writes; a client's
    request only through the inbox. The worker checks it, and so does the Lua."""
    await lending.event("request", "q0", "ann", ["far"])
    target = KEYS.inbox("lending") if stream == "inbox" else KEYS.replies
    event = {"v": 1, "type": kind, "id": "q0", "user": "ann", "books": ["far"]}
    entry = await lending.r.xadd(target, {"e": json.dumps(event)})
    await lending.r.xreadgroup("lending", "w1", {target: ">"})
    before = await lending.status("far")
    (row,) = await lending.apply((entry, kind, "q0", "ann", ["far"]), stream=target)
    assert (row.status, row.reason) == ("orphan", "wrong_stream")
    assert await lending.status("far") == before == "paged:q0"  # the request still waits
    (dead,) = await lending.r.xrange(KEYS.dead_letters("lending"))
    assert dead[1][b"reason"] == b"wrong_stream"
