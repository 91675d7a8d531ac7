"""A request id names one request: resubmitting it with the same books is safe (the
first outcome comes back), with other books it is refused (exit 2), never shown the
first request's outcome as if it were this one's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from bookstream.client import AsyncClient
from bookstream.errors import BadInput

from tests.conftest import RedisServer, WorkerProcess, run_cli, wait_for
from tests.lending.test_functions import KEYS, Lending


def test_the_cli_refuses_an_id_used_for_other_books(
    served: RedisServer, bookstream_env: dict[str, str]
) -> None:
    first = run_cli(bookstream_env, "request", "ann", "a", "--request-id", "x1", server=served)
    assert first.returncode == 0, first.stderr
    again = run_cli(bookstream_env, "request", "ann", "a", "--request-id", "x1", server=served)
    assert again.returncode == 0 and again.stdout == first.stdout
    other = run_cli(bookstream_env, "request", "ann", "b", "--request-id", "x1", server=served)
    assert other.returncode == 2, other
    assert "'x1' was already used for other books" in other.stderr
    assert "Traceback" not in other.stderr
    returned = run_cli(
        bookstream_env, "return", "ann", "a", "b", "--request-id", "x2", server=served
    )
    assert returned.returncode == 0, returned.stderr
    fewer = run_cli(bookstream_env, "return", "ann", "a", "--request-id", "x2", server=served)
    assert fewer.returncode == 2 and "other books" in fewer.stderr


async def test_two_submissions_racing_past_the_door(redis_server: RedisServer) -> None:
    """Both pass the door before either is applied: the second is applied as a duplicate,
    and its client, reading the first's outcome, says so instead of showing it."""
    async with AsyncClient(redis_server.url, library="t", require_worker=False) as client:
        lending = Lending(await client.redis())
        await lending.setup()
        doorbell = lending.r.pubsub()
        await doorbell.subscribe(KEYS.doorbell)
        await client.submit_request("ann", ["a"], request_id="x")
        second = asyncio.create_task(client.request("ann", ["b"], request_id="x", timeout=30))
        rings = 0
        async with asyncio.timeout(10):
            async for message in doorbell.listen():
                rings += message["type"] == "message"
                if rings == 2:
                    break
        await doorbell.aclose()
        await lending.fn.admit(10, 1 << 20)
        ((_, entries),) = await lending.r.xreadgroup("lending", "w1", {KEYS.inbox("lending"): ">"})
        calls = []
        for entry, fields in entries:
            event = json.loads(fields[b"e"])
            calls.append((entry, "request", event["id"], event["user"], event["books"]))
        rows = await lending.apply(*calls)
        assert [row.status for row in rows] == ["pending", "duplicate"]
        await lending.event("fetched", "x", "", ["a"])  # the first is decided
        with pytest.raises(BadInput, match="'x' was already used for other books"):
            await asyncio.wait_for(second, 10)
        # The first's own client gets its outcome.
        outcome = await client.outcome("x", timeout=5)
        assert (outcome.status, outcome.books, outcome.lent) == ("accepted", ["a"], ["a"])


def test_the_door_refuses_other_books_while_the_request_waits_for_shelving(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    """No Shelving worker: the first request waits for its books, with no outcome yet, so
    the client cannot tell; the door can, from the waiting request's state."""
    start_worker("lending", redis_server)
    args = ("--request-id", "w1", "--no-wait")
    first = run_cli(bookstream_env, "request", "ann", "far", *args, server=redis_server)
    assert first.returncode == 0, first.stderr
    r = redis_server.client()
    wait_for(lambda: bool(r.exists("bs:{main}:lending:req:w1")))
    again = run_cli(bookstream_env, "request", "ann", "far", *args, server=redis_server)
    assert again.returncode == 0, again.stderr
    other = run_cli(bookstream_env, "request", "ann", "near", *args, server=redis_server)
    assert (other.returncode, other.stderr.strip()) == (
        2,
        "bookstream: error: request id 'w1' was already used for other books: choose another id",
    )
