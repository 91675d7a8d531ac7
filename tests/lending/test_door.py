"""bs1_submit, the door: what it lets in is exactly what the workers accept (or less),
what it refuses leaves no trace, and a request id stays bound to its first user; and
bs1_admit, which moves the submissions into Lending's inbox."""

from __future__ import annotations

import json

import msgspec
import pytest
import redis.asyncio as aioredis
from bookstream_core.events import lending_decoder
from bookstream_core.functions import lua_constants
from bookstream_lending.functions import LendingFunctions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from tests.lending.test_functions import KEYS, LK, Lending

INBOX = KEYS.inbox("lending")
SUBMISSIONS = KEYS.submissions
MAX_ID = "18446744073709551615-18446744073709551615"


def test_the_door_speaks_the_wire_contract_s_own_bounds() -> None:
    """The schema version, the bounds and the field and kind names come from their one
    definition (events.py, ids.py, rejected.py), written in when the library is read."""
    from bookstream_lending.functions import SOURCE

    constants = lua_constants()
    assert "@" not in SOURCE
    assert constants["SUBMITTED_FIELDS"] == (
        '{["books"] = true, ["id"] = true, ["library"] = true, ["type"] = true, '
        '["user"] = true, ["v"] = true}'
    )
    assert constants["MAX_REQUEST_ID"] == "64" and constants["MAX_EVENT_BYTES"] == "65536"
    for name in ("SCHEMA_VERSION", "MAX_BOOKS", "SUBMISSION_KINDS"):
        assert constants[name] in SOURCE


def _event(**over: object) -> str:
    event = {"v": 1, "type": "request", "id": "r1", "user": "ann", "books": ["a"], **over}
    return json.dumps({k: v for k, v in event.items() if v is not ...})


@pytest.fixture
async def door(aredis: aioredis.Redis) -> LendingFunctions:
    return LendingFunctions(aredis, KEYS)


async def test_a_valid_event_is_appended_as_sent(
    door: LendingFunctions, aredis: aioredis.Redis
) -> None:
    payload = _event(books=["a", "b, with comma", "été"])
    assert await door.submit(payload) == 1
    # null names no library, as the workers read it (breaker: refused as "userdata").
    assert await door.submit(_event(library=None)) == 2
    assert await aredis.delete(SUBMISSIONS) == 1
    assert await door.submit(payload) == 1
    assert await aredis.lrange(SUBMISSIONS, 0, -1) == [payload.encode()]
    # The submission is all the door writes: a client needs no right on any other key.
    assert [k async for k in aredis.scan_iter("bs:{t}:*")] == [SUBMISSIONS.encode()]


REFUSED = {
    "not json": "{",
    "not an object": "[1]",
    "unknown field": _event(extra=1),
    "version 2": _event(v=2),
    "version as text": _event(v="1"),
    "version 1.0": _event().replace('"v": 1', '"v": 1.0'),
    "version 1e0": _event().replace('"v": 1', '"v": 1e0'),
    "version 1.0 twice": _event().replace('"v": 1', '"v": 1, "v": 1.0'),
    "version key escaped": _event().replace('"v": 1', '"\\u0076": 1'),
    # Breaker: a second, escaped key was read by the door (cjson keeps the last) and
    # refused by the workers with no request id: its sender waited for ever.
    "version twice, escaped hex": _event()[:-1] + ', "\\u0076": 0x1}',
    "version 01": _event().replace('"v": 1', '"v": 01'),
    "version +1": _event().replace('"v": 1', '"v": +1'),
    "type twice": _event().replace('"type": "request"', '"type": "return", "type": "request"'),
    "escaped type key": _event().replace('"type"', '"\\u0074ype"'),
    "a fetch": _event(type="fetch"),
    "id with a newline": _event(id="abc\n"),
    "id too long": _event(id="x" * 65),
    "id starting with -": _event(id="-x"),
    "user empty": _event(user=""),
    "user white space": _event(user="   "),
    "user trailing NBSP": _event(user="ann\u00a0"),
    "user with escape": _event(user="a\u001b[31m"),
    "user with C1": _event(user="a\u0085b"),
    "user with U+2028": _event(user="a\u2028b"),
    "user too long": _event(user="é" * 201),
    "user a number": _event(user=7),
    "no books": _event(books=[]),
    "books an object": _event(books={"1": "a"}),
    "33 books": _event(books=[f"b{n}" for n in range(33)]),
    "a book null": _event(books=["a", None]),
    "missing user": _event(user=...),
    "another library": _event(library="other"),
    "too large": _event(user="a", books=["x" * 190] * 32) + " " * 60000,
}


@pytest.mark.parametrize("payload", REFUSED.values(), ids=REFUSED.keys())
async def test_a_bad_event_is_refused_and_leaves_no_trace(
    door: LendingFunctions, aredis: aioredis.Redis, payload: str
) -> None:
    with pytest.raises(ResponseError, match=r"^BSBAD "):
        await door.submit(payload)
    assert [k async for k in aredis.scan_iter("bs:{t}:*")] == []


@pytest.mark.parametrize(
    "user",
    [
        b"\xff",
        b"\xed\xa0\x80\xed\xb0\x80",
        b"\xe0\x80\x80",
        b"\xf0\x80\x80\x80",
        b"\xf4\x90\x80\x80",
    ],
    ids=["not UTF-8", "CESU-8 surrogates", "overlong 3", "overlong 4", "past U+10FFFF"],
)
async def test_invalid_utf8_is_refused(door: LendingFunctions, user: bytes) -> None:
    """Breaker: a CESU-8 user passed the door, the workers could not read it, and its
    sender never got an outcome."""
    payload = b'{"v":1,"type":"request","id":"r","user":"' + user + b'","books":["a"]}'
    with pytest.raises(msgspec.DecodeError):
        lending_decoder.decode(payload)  # what a worker makes of it
    with pytest.raises(ResponseError, match=r"^BSBAD .*UTF-8"):
        await door.submit(payload)


async def test_a_request_id_stays_with_its_first_user(
    door: LendingFunctions, aredis: aioredis.Redis
) -> None:
    """Once Lending has recorded an id (a request waiting for Shelving, an outcome),
    another user, kind or set of books is refused at the door; the same request may be
    resubmitted (its books in any order, repeated or not)."""
    lending = Lending(aredis)
    await lending.setup()
    await aredis.sadd(LK.storage, "near")
    await aredis.hset(LK.book_status, "near", "storage")
    await aredis.hset(LK.book_status, "gone", "lent:cy")
    books = ["far", "near", "gone"]
    assert (await lending.event("request", "mine", "ann", books)).status == "pending"
    others = {
        "another user": _event(id="mine", user="bob", books=books),
        "another kind": _event(id="mine", type="return", books=books),
        "fewer books": _event(id="mine", books=["far", "near"]),
        "another book": _event(id="mine", books=["far", "near", "else"]),
        "more books": _event(id="mine", books=[*books, "else"]),
    }
    for answered in (False, True):
        if answered:
            assert (await lending.event("fetched", "mine", "", ["far"])).status == "accepted"
        before = await aredis.llen(SUBMISSIONS)
        # The same request again: a safe resubmission.
        await door.submit(_event(id="mine", books=["gone", "far", "near", "far"]))
        for why, other in others.items():
            with pytest.raises(ResponseError, match=r"^BSTAKEN ") as refused:
                await door.submit(other)
            assert ("other books" in str(refused.value)) == why.endswith(("books", "book")), why
        assert await aredis.llen(SUBMISSIONS) == before + 1


async def test_an_outcome_without_books_is_not_held_against_a_resubmission(
    door: LendingFunctions, aredis: aioredis.Redis
) -> None:
    """Outcomes stored before they named their books (an upgrade) name none: the door
    cannot tell, and lets the same user's resubmission through as before."""
    old = {"request_id": "r8", "kind": "request", "status": "accepted", "user": "ann"}
    await aredis.set(KEYS.outcome("r8"), json.dumps(old))
    await door.submit(_event(id="r8", books=["anything"]))


async def test_a_rejected_id_names_nobody(door: LendingFunctions, aredis: aioredis.Redis) -> None:
    """A `rejected` outcome (a malformed entry) applied nothing: any user may use the id."""
    rejected = {"request_id": "r9", "kind": "request", "status": "rejected", "user": ""}
    await aredis.set(KEYS.outcome("r9"), json.dumps(rejected))
    await door.submit(_event(id="r9", user="bob"))


async def test_a_submissions_key_of_another_type_is_redis_s_trouble(
    door: LendingFunctions, aredis: aioredis.Redis
) -> None:
    await aredis.set(SUBMISSIONS, "x")
    with pytest.raises(ResponseError, match=r"^BSENV "):
        await door.submit(_event())
    assert await aredis.get(SUBMISSIONS) == b"x"


async def test_admission_moves_submissions_in_order_once(
    door: LendingFunctions, aredis: aioredis.Redis
) -> None:
    """Raw pushes (past the door) are admitted as they are: the workers judge them."""
    payloads = [_event(id=f"r{n}").encode() for n in range(20)]
    for payload in payloads[:10]:
        await door.submit(payload)
    await aredis.rpush(SUBMISSIONS, b"junk", *payloads[10:])
    assert await door.admit(4, 1 << 20) == (4, 17)
    assert await door.admit(100, 1 << 20) == (17, 0)
    assert await door.admit(100, 1 << 20) == (0, 0)
    admitted = [fields for _, fields in await aredis.xrange(INBOX)]
    assert admitted == [{b"e": p} for p in [*payloads[:10], b"junk", *payloads[10:]]]
    assert not await aredis.exists(SUBMISSIONS)


async def test_one_admission_stops_after_its_byte_budget(
    door: LendingFunctions, aredis: aioredis.Redis
) -> None:
    """A few huge raw pushes are not all copied in one call (one call holds Redis)."""
    await aredis.rpush(SUBMISSIONS, *[b"x" * 1_000_000] * 5)
    assert await door.admit(512, 1_500_000) == (2, 3)
    assert await aredis.xlen(INBOX) == 2


async def test_an_oversized_push_is_admitted_cut_naming_its_request(
    door: LendingFunctions, aredis: aioredis.Redis
) -> None:
    """No worker ever receives an oversized submission whole, even one that waits for a
    single entry: it is admitted as bs1_read would cut it (8 KiB, its size, what it names)."""
    big = _event(id="big-1")[:-1] + ', "pad": "' + "x" * 100_000 + '"}'
    await aredis.rpush(SUBMISSIONS, big, "y" * 3_000_000)
    assert await door.admit(10, 1 << 30) == (2, 0)
    (_, named), (_, unnamed) = await aredis.xrange(INBOX)
    assert named == {b"e": big.encode()[:8192], b"cut": str(len(big)).encode(),
                     b"id": b"big-1", b"type": b"request"}  # fmt: skip
    assert unnamed[b"cut"] == b"3000000" and unnamed[b"id"] == b""


async def test_an_inbox_out_of_ids_is_mended_or_stops_admission(
    door: LendingFunctions, aredis: aioredis.Redis
) -> None:
    """Ids pushed to the end (an admin's mistake: nobody else writes the inbox): emptied
    (MAXLEN 0), the admission mends them itself; while a future entry is left, it is
    Redis's trouble (BSENV), nothing moves, until the workers set that entry aside."""
    await door.submit(_event())
    await aredis.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    await aredis.execute_command("XADD", INBOX, "MAXLEN", "0", MAX_ID, "e", "x")
    assert await door.admit(10, 1 << 20) == (1, 0)
    await door.submit(_event())
    await aredis.xadd(INBOX, {"e": "future"}, id=MAX_ID)
    with pytest.raises(ResponseError, match=r"^BSENV "):
        await door.admit(10, 1 << 20)
    assert await aredis.llen(SUBMISSIONS) == 1
    await aredis.xdel(INBOX, MAX_ID)
    assert await door.admit(10, 1 << 20) == (1, 0)
    assert await aredis.xlen(INBOX) == 2


ids = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=8
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    user=st.one_of(ids, st.just(" a"), st.just("a\u3000")),
    books=st.lists(ids, min_size=0, max_size=3),
    rid=st.one_of(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,5}\Z"), ids),
)
async def test_the_door_never_lets_in_what_the_workers_refuse(
    aredis: aioredis.Redis, user: str, books: list[str], rid: str
) -> None:
    """Anything the door accepts, the worker's decoder accepts too."""
    payload = _event(id=rid, user=user, books=books)
    try:
        await LendingFunctions(aredis, KEYS).submit(payload)
    except ResponseError as exc:
        assert str(exc).startswith(("BSBAD", "BSTAKEN")), exc
        return
    try:
        lending_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        pytest.fail(f"the door let in {payload!r}, which a worker refuses: {exc}")
