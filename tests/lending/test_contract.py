"""The wire contract of outcomes: every path of every handler (lending.lua, and the
rejection core.lua writes) produces JSON that decodes strictly into the fields of
bookstream_core.events.Outcome: none missing, none unknown, each of its type. The Lua
writes the JSON by hand for speed; this is what keeps it honest."""

from __future__ import annotations

import typing

import msgspec
import pytest
import redis.asyncio as aioredis
from bookstream_core.events import SCHEMA_VERSION, Outcome, Unavailable
from bookstream_core.functions import CoreFunctions
from bookstream_core.types import DenialReason

from tests.conftest import dead_letter_row
from tests.lending.test_functions import DOMAIN, KEYS, LK, RUNTIME, Lending

#: Outcome with every field required and none other allowed, made from Outcome itself (one
#: definition): a field the Lua leaves out, or adds, fails here.
StrictUnavailable = msgspec.defstruct(
    "StrictUnavailable",
    [(f.name, f.type) for f in msgspec.structs.fields(Unavailable)],
    forbid_unknown_fields=True,
    kw_only=True,
)
StrictOutcome = msgspec.defstruct(
    "StrictOutcome",
    [
        (f.name, list[StrictUnavailable] if f.type == list[Unavailable] else f.type)
        for f in msgspec.structs.fields(Outcome)
    ],
    forbid_unknown_fields=True,
    kw_only=True,
)
STRICT = msgspec.json.Decoder(StrictOutcome)


def test_the_strict_twin_requires_every_field_of_the_outcome() -> None:
    assert StrictOutcome.__struct_fields__ == Outcome.__struct_fields__
    nested = (b'{"request_id": "r", "kind": "request", "status": "denied", "user": "u", '
              b'"books": ["b"], "lent": [], '
              b'"unavailable": [{"book": "b", "reason": "lent", "bogus": 1}], '
              b'"returned": [], "not_held": [], "reason": null, "books_in_hand": [], '
              b'"limit": null, "entry": null, "submission": null}')  # fmt: skip
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(nested, type=StrictOutcome)
    with pytest.raises(msgspec.ValidationError, match="missing required field"):
        msgspec.json.decode(b'{"request_id": "r", "kind": "request", "status": "accepted"}',
                            type=StrictOutcome)  # fmt: skip


@pytest.fixture
async def lending(aredis: aioredis.Redis) -> Lending:
    lending = Lending(aredis)
    await lending.setup()
    # Storage capacity is 2 in these tests; the limit is 5.
    for book in ("s1", "s2"):
        await aredis.sadd(LK.storage, book)
        await aredis.hset(LK.book_status, book, "storage")
    return lending


async def _outcome(lending: Lending, request_id: str) -> StrictOutcome:
    raw = await lending.r.get(KEYS.outcome(request_id))
    assert raw is not None, request_id
    return STRICT.decode(raw)


async def test_every_path_writes_the_contract(lending: Lending) -> None:
    paths: dict[str, tuple[str, str | None]] = {}

    async def seen(rid: str) -> None:
        outcome = await _outcome(lending, rid)
        paths[rid] = (outcome.status, outcome.reason)

    # accepted at once (storage only), with an unavailable book after it
    await lending.event("request", "at-once", "ann", ["s1"])
    await seen("at-once")
    # accepted after shelving's reply, one book unavailable (lent to ann herself)
    await lending.request("paged", "ann", ["far", "s1"])
    await seen("paged")
    # denied at once: nothing available (lent to someone else)
    await lending.event("request", "none", "bob", ["s1"])
    await seen("none")
    # denied at once: over the limit
    await lending.event("request", "over", "ann", ["c1", "c2", "c3", "c4"])
    await seen("over")
    # denied at decision time: other requests of the user were accepted meanwhile
    await lending.event("request", "late", "cy", ["d1", "d2", "d3"])
    await lending.request("first", "cy", ["e1", "e2", "e3"])
    await lending.event("fetched", "late")
    await seen("late")
    # a return that takes books back, and one with nothing to take
    await lending.return_("back", "ann", ["far", "nope"])
    await seen("back")
    await lending.return_("nothing", "dan", ["x"])
    await seen("nothing")
    # given up: shelving set the fetch aside, or never answered
    await lending.event("request", "failed", "eve", ["f1"])
    await lending.event("unfetched", "failed")
    await seen("failed")
    await lending.event("request", "slow", "eve", ["g1"])
    await lending.fn.expire(DOMAIN, RUNTIME, deadline_ms=0)
    await seen("slow")
    # set aside as malformed: core.lua's rejection
    inbox = KEYS.inbox("lending")
    bad = await lending.add("request", "bad", "ann", ["x"])
    row: list[bytes | str | int] = [bad, 'invalid_json: "quoted"', 1, "bad", "request", ""]
    await CoreFunctions(lending.r).dead_letter(
        inbox, KEYS.dead_letters("lending"), KEYS.domain_events, inbox,
        group="lending", retention_s=60, maxlen=100, outcome_prefix=KEYS.outcome(""),
        schema_version=SCHEMA_VERSION, rows=[dead_letter_row([*row, "", 1, 1, "e", "x"])],
    )  # fmt: skip
    await seen("bad")

    assert paths == {
        "at-once": ("accepted", None),
        "paged": ("accepted", None),
        "none": ("denied", "none_available"),
        "over": ("denied", "limit"),
        "late": ("denied", "limit"),
        "back": ("processed", None),
        "nothing": ("denied", "not_held"),
        "failed": ("denied", "fetch_failed"),
        "slow": ("denied", "shelving_timeout"),
        "bad": ("rejected", 'invalid_json: "quoted"'),
    }
    # Every reason of a denial is a DenialReason, and every DenialReason has its path.
    denials = {reason for status, reason in paths.values() if status == "denied"}
    assert denials == set(typing.get_args(DenialReason))
    # The domain events carry the same JSON, one per outcome.
    events = await lending.r.xrange(KEYS.domain_events)
    decoded = [STRICT.decode(fields[b"e"]) for _, fields in events]
    assert sorted(o.request_id for o in decoded) == sorted([*paths, "first"])


async def test_every_event_the_lua_writes_is_exactly_an_event_struct(
    lending: Lending,
) -> None:
    """The events the functions build by hand (fetch, reshelve, unfetch from Lending;
    fetched from Shelving; unfetched from core) decode into bookstream_core.events and
    encode back to the very same JSON object: no field missing, none unknown, none typed
    otherwise. Encoded again, nothing changes."""
    import json as _json

    from bookstream_core.events import encode_event, lending_decoder, shelving_decoder
    from bookstream_shelving.functions import ShelvingFunctions

    r = lending.r
    await lending.request("x1", "ann", ["s1", "far"])  # fetch, fetched
    await lending.return_("x2", "ann", ["s1", "far"])  # reshelve (storage full of s2)
    await lending.event("request", "x3", "bob", ["gone"])
    await lending.event("unfetched", "x3")  # unfetch
    shelving_inbox = KEYS.inbox("shelving")
    await r.xgroup_create(shelving_inbox, "shelving", id="0", mkstream=True)
    entries = await r.xreadgroup("shelving", "w1", {shelving_inbox: ">"})
    rows = [
        (e, _json.loads(f[b"e"])["type"], _json.loads(f[b"e"])["id"], _json.loads(f[b"e"])["eid"],
         _json.loads(f[b"e"]).get("fetch", ""), _json.loads(f[b"e"])["books"])
        for e, f in entries[0][1]
    ]  # fmt: skip
    await ShelvingFunctions(r, KEYS).apply(RUNTIME, rows)  # writes fetched replies
    inbox = KEYS.inbox("lending")
    bad = await lending.add("request", "x4", "ann", ["y"])
    fetch_entry = await r.xadd(shelving_inbox, {"e": "{}"})
    await r.xreadgroup("shelving", "w1", {shelving_inbox: ">"})
    await CoreFunctions(r).dead_letter(
        shelving_inbox, KEYS.dead_letters("shelving"), KEYS.domain_events, KEYS.replies,
        group="shelving", retention_s=60, maxlen=100, outcome_prefix=KEYS.outcome(""),
        schema_version=SCHEMA_VERSION,
        rows=[dead_letter_row([fetch_entry, "too_many_deliveries", 6, "x5", "fetch", "", "", 1,
                               1, "e", "{}"])],
    )  # fmt: skip
    del bad
    written = [f[b"e"] for _, f in await r.xrange(shelving_inbox) if f.get(b"e") != b"{}"]
    written += [f[b"e"] for _, f in await r.xrange(inbox)]
    written += [f[b"e"] for _, f in await r.xrange(KEYS.replies)]
    kinds = set()
    for raw in written:
        as_sent = _json.loads(raw)
        if "user" in as_sent:
            continue  # written by the tests' own producer (Lending.add), not by the Lua
        decoder = (
            lending_decoder if as_sent["type"] in ("fetched", "unfetched") else shelving_decoder
        )
        event = decoder.decode(raw)
        assert _json.loads(encode_event(event)) == as_sent, raw
        kinds.add(as_sent["type"])
    assert kinds == {"fetch", "reshelve", "unfetch", "fetched", "unfetched"}
