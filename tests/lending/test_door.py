"""bs1_submit, the door: what it lets in is exactly what the workers accept (or less),
what it refuses leaves no trace, and a request id stays bound to its first user."""

from __future__ import annotations

import json

import msgspec
import pytest
import redis.asyncio as aioredis
from bookstream_core.events import SCHEMA_VERSION, lending_decoder
from bookstream_core.functions import CoreFunctions
from bookstream_lending.functions import LendingFunctions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from tests.lending.test_functions import KEYS, Lending

INBOX = KEYS.inbox("lending")
MAX_ID = "18446744073709551615-18446744073709551615"


def test_the_door_speaks_the_schema_version_of_the_events() -> None:
    from bookstream_lending.functions import SOURCE

    assert "@SCHEMA_VERSION@" not in SOURCE
    assert f"local SCHEMA_VERSION = {SCHEMA_VERSION}\n" in SOURCE


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
    entry_id = await door.submit(payload)
    ((got_id, fields),) = await aredis.xrange(INBOX)
    assert got_id == entry_id and fields == {b"e": payload.encode()}
    # The entry is all the door writes: a client needs no right on any other key.
    assert [k async for k in aredis.scan_iter("bs:{t}:*")] == [INBOX.encode()]


REFUSED = {
    "not json": "{",
    "not an object": "[1]",
    "unknown field": _event(extra=1),
    "version 2": _event(v=2),
    "version as text": _event(v="1"),
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
    assert not await aredis.exists(INBOX)
    assert [k async for k in aredis.scan_iter("bs:{t}:*")] == []


async def test_invalid_utf8_is_refused(door: LendingFunctions, aredis: aioredis.Redis) -> None:
    with pytest.raises(ResponseError, match=r"^BSBAD .*UTF-8"):
        await door.submit(b'{"v":1,"type":"request","id":"r","user":"\xff","books":["a"]}')


async def test_a_request_id_stays_with_its_first_user(
    door: LendingFunctions, aredis: aioredis.Redis
) -> None:
    """Once Lending has recorded an id (a request waiting for Shelving, an outcome),
    another user or kind is refused at the door; the same user may resubmit."""
    lending = Lending(aredis)
    await lending.setup()
    assert (await lending.event("request", "mine", "ann", ["far"])).status == "pending"
    others = (_event(id="mine", user="bob"), _event(id="mine", type="return"))
    for answered in (False, True):
        if answered:
            assert (await lending.event("fetched", "mine", "", ["far"])).status == "accepted"
        before = await aredis.xlen(INBOX)
        await door.submit(_event(id="mine"))  # the same user again: a safe resubmission
        for other in others:
            with pytest.raises(ResponseError, match=r"^BSTAKEN "):
                await door.submit(other)
        assert await aredis.xlen(INBOX) == before + 1


async def test_a_rejected_id_names_nobody(door: LendingFunctions, aredis: aioredis.Redis) -> None:
    """A `rejected` outcome (a malformed entry) applied nothing: any user may use the id."""
    rejected = {"request_id": "r9", "kind": "request", "status": "rejected", "user": ""}
    await aredis.set(KEYS.outcome("r9"), json.dumps(rejected))
    await door.submit(_event(id="r9", user="bob"))


async def test_an_inbox_out_of_ids_is_redis_s_trouble(
    door: LendingFunctions, aredis: aioredis.Redis
) -> None:
    await aredis.xadd(INBOX, {"e": "{}"}, id=MAX_ID)
    with pytest.raises(ResponseError, match=r"^BSENV "):
        await door.submit(_event())
    assert await aredis.xlen(INBOX) == 1


async def test_ids_pushed_to_the_end_are_mended_by_lending_not_the_door(
    door: LendingFunctions, aredis: aioredis.Redis
) -> None:
    """Breaker: a client pushed the inbox's ids to the end and trimmed it empty; the door
    (run as the client, who may not XSETID) refused forever and nobody repaired an empty
    stream. Now the door only looks, and Lending's housekeeping (bs1_trim) mends it."""
    await aredis.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    await aredis.execute_command("XADD", INBOX, "MAXLEN", "0", MAX_ID, "e", "x")
    with pytest.raises(ResponseError, match=r"^BSENV .*pushed ahead"):
        await door.submit(_event())
    await CoreFunctions(aredis).trim(INBOX)
    await door.submit(_event())
    assert await aredis.xlen(INBOX) == 1


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
