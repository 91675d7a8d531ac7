"""A handler that fails (a bug in lending.lua) sets its event aside as ``script_error``;
a client's submission is also answered ``rejected``, naming the submission's digest, so
its client stops waiting at once and knows the rejection for its own.

The bug is injected by loading lending.lua with one line more at the top of a handler:
no path of the real handlers fails on any input (a test would have found it)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
import redis.asyncio as aioredis
from bookstream.client import AsyncClient
from bookstream_core.events import decode_outcome, submission_digest
from bookstream_lending.functions import SOURCE

from tests.conftest import RedisServer
from tests.lending.test_functions import KEYS, LK, Lending


def _with_bug(handler: str) -> str:
    head = re.search(rf"local function {handler}\(.*\)\n", SOURCE)
    assert head is not None
    injected = "  if reqid ~= 'fine' then error('injected bug') end\n"
    return SOURCE.replace(head[0], head[0] + injected)


@pytest.fixture
async def buggy(aredis: aioredis.Redis) -> Lending:
    lending = Lending(aredis)
    await lending.setup()
    on_return = re.search(r"local function on_return\(.*\)\n", SOURCE)
    assert on_return is not None
    source = _with_bug("on_request").replace(
        on_return[0], on_return[0] + "  error('injected bug')\n"
    )
    await aredis.function_load(source, replace=True)
    return lending


async def _outcome(r: aioredis.Redis, rid: str) -> bytes | None:
    raw: bytes | None = await r.get(KEYS.outcome(rid))
    return raw


@pytest.mark.parametrize("kind", ["request", "return"])
async def test_a_failing_handler_answers_rejected_with_the_digest(
    buggy: Lending, kind: str
) -> None:
    entry = await buggy.add(kind, "r1", "ann", ["a"])
    (row,) = await buggy.apply((entry, kind, "r1", "ann", ["a"]))
    assert (row.status, row.reason.split(":")[0]) == ("rejected", "script_error")
    raw = await _outcome(buggy.r, "r1")
    assert raw is not None
    outcome = decode_outcome(raw)
    assert (outcome.kind, outcome.status, outcome.entry) == (kind, "rejected", entry.decode())
    assert outcome.reason is not None and "injected bug" in outcome.reason
    ((_, fields),) = await buggy.r.xrange(KEYS.inbox("lending"), entry, entry)
    assert outcome.submission == submission_digest(fields[b"e"])
    # Set aside and acknowledged as before: nothing pending, one dead letter.
    assert await buggy.pending() == 0
    (dead,) = await buggy.r.xrange(KEYS.dead_letters("lending"))
    # In the core's format, with the entry's own field: `dead-letters` lists, shows and
    # retries it like any other (breaker: it held a rebuilt payload and no request id).
    assert dead[1][b"entry"] == entry
    assert (dead[1][b"request_id"], dead[1][b"kind"]) == (b"r1", kind.encode())
    assert dead[1][b"f.e"] == fields[b"e"] and dead[1][b"fields"] == b"1"


async def test_an_answered_request_keeps_its_outcome(buggy: Lending) -> None:
    # 'fine' passes the injected line: a real outcome, then a replay that fails.
    await buggy.r.sadd(LK.storage, "a")
    await buggy.r.hset(LK.book_status, "a", "storage")
    first = await buggy.event("request", "fine", "ann", ["a"])
    assert first.status == "accepted"
    accepted = await _outcome(buggy.r, "fine")
    await buggy.r.function_load(_with_bug("on_request").replace("reqid ~= 'fine'", "true"),
                                replace=True)  # fmt: skip
    replay = await buggy.event("request", "fine", "ann", ["a"])
    assert replay.status == "orphan"  # set aside, but its client had its answer
    assert await _outcome(buggy.r, "fine") == accepted


async def test_the_client_gets_its_rejection_at_once(
    buggy: Lending, redis_server: RedisServer
) -> None:
    r = buggy.r
    async with AsyncClient(redis_server.url, library="t", require_worker=False) as client:
        doorbell = r.pubsub()
        await doorbell.subscribe(KEYS.doorbell)
        waiting = asyncio.create_task(client.request("ann", ["a"], request_id="r9", timeout=30))
        async with asyncio.timeout(10):  # the door rings once the submission is pushed
            async for message in doorbell.listen():
                if message["type"] == "message":
                    break
        await doorbell.aclose()
        await buggy.fn.admit(10, 1 << 20)
        ((_, entries),) = await r.xreadgroup("lending", "w1", {KEYS.inbox("lending"): ">"})
        ((entry, fields),) = entries
        event = json.loads(fields[b"e"])
        await buggy.apply((entry, "request", event["id"], event["user"], event["books"]))
        outcome = await asyncio.wait_for(waiting, 10)
    assert (outcome.request_id, outcome.status) == ("r9", "rejected")
    assert outcome.reason is not None and outcome.reason.startswith("script_error")
