"""Concurrency with real worker processes: two or more of each service on one redis-server.

Every test drives the library through the public client (or the CLI), waits until every
stream is drained, and then runs the audit of docs/design.md §4 on top of its own checks.
The helpers ``start_library``, ``wait_quiescent`` and ``assert_audit_ok`` are reused by
``test_model.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from collections.abc import Callable
from typing import cast

import pytest
import redis.asyncio as aioredis
from bookstream import AsyncClient, BadInput, Outcome
from bookstream.audit import audit
from bookstream_core.events import SCHEMA_VERSION, RequestEvent, encode_event
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_lending.keys import LendingKeys

from tests.conftest import VENV_BIN, RedisServer, WorkerProcess

LIMIT = 5
TIMEOUT = 60.0

StartWorker = Callable[..., WorkerProcess]
Entries = list[tuple[bytes, dict[bytes, bytes]]]


# --------------------------------------------------------------------------- helpers


def start_library(
    start_worker: StartWorker,
    server: RedisServer,
    *,
    library: str = "main",
    lending: int = 2,
    shelving: int = 2,
    capacity: int | None = None,
) -> list[WorkerProcess]:
    """Start ``lending`` + ``shelving`` real worker processes for one library."""
    extra = ["--storage-capacity", str(capacity)] if capacity is not None else []
    workers = [
        start_worker("lending", server, name=f"lending-{i}", library=library, extra=extra)
        for i in range(lending)
    ]
    workers += [
        start_worker("shelving", server, name=f"shelving-{i}", library=library)
        for i in range(shelving)
    ]
    return workers


def async_redis(server: RedisServer) -> aioredis.Redis:
    return aioredis.Redis(unix_socket_path=str(server.socket))


def _id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def _quiet(r: aioredis.Redis, library: str) -> bool:
    """One atomic snapshot: every inbox entry delivered to its group and acknowledged."""
    keys = LibraryKeys(library)
    async with r.pipeline(transaction=True) as pipe:
        for service in SERVICES:
            pipe.xinfo_stream(keys.inbox(service))
            pipe.xinfo_groups(keys.inbox(service))
        replies = await pipe.execute()
    for stream, groups in zip(replies[0::2], replies[1::2], strict=True):
        last = _id_tuple(stream["last-generated-id"])
        if not groups:
            return False
        for group in groups:
            if int(group["pending"]) or _id_tuple(group["last-delivered-id"]) != last:
                return False
    return True


async def wait_quiescent(
    r: aioredis.Redis, library: str = "main", timeout: float = TIMEOUT
) -> None:
    """Wait until every stream of the library is drained (docs/design.md §4: 'at quiescence')."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await _quiet(r, library):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"library {library!r} did not reach quiescence within {timeout} s")


async def assert_audit_ok(
    r: aioredis.Redis, library: str = "main", *, storage_capacity: int = 20
) -> None:
    await wait_quiescent(r, library)
    report = await audit(r, library, user_limit=LIMIT, storage_capacity=storage_capacity)
    assert report.ok, "audit violations:\n" + "\n".join(report.violations)


async def count_outcomes_for(r: aioredis.Redis, library: str, request_id: str) -> int:
    """How many outcomes the domain event stream records for one request id."""
    n = 0
    entries = cast(Entries, await r.xrange(LibraryKeys(library).domain_events))
    for _, fields in entries:
        if json.loads(fields[b"e"])["request_id"] == request_id:
            n += 1
    return n


# --------------------------------------------------------------------------- tests


async def test_one_user_100_concurrent_requests_never_holds_more_than_the_limit(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    start_library(start_worker, redis_server)
    books = [f"book-{i:03d}" for i in range(100)]
    loans_key = LendingKeys(LibraryKeys("main")).loans("reader")
    observed_max = 0
    done = asyncio.Event()

    r = async_redis(redis_server)
    try:

        async def sample() -> None:
            # Watch the user's loans while the requests are being decided.
            nonlocal observed_max
            while not done.is_set():
                observed_max = max(observed_max, int(await r.scard(loans_key)))
                await asyncio.sleep(0.001)

        sampler = asyncio.create_task(sample())
        try:
            async with AsyncClient(redis_server.url) as client:
                outcomes = await asyncio.gather(
                    *(client.request("reader", [book], timeout=TIMEOUT) for book in books)
                )
                done.set()
                await sampler
                holdings = await client.user_books("reader")
        finally:
            done.set()

        assert all(o.kind == "request" and o.user == "reader" for o in outcomes)
        assert max(len(o.books_in_hand) for o in outcomes) <= LIMIT
        assert observed_max <= LIMIT
        accepted = [o for o in outcomes if o.status == "accepted"]
        denied = [o for o in outcomes if o.status == "denied"]
        # Fresh distinct books are always found, so only the limit can deny, and it
        # denies only once the user holds LIMIT books: exactly LIMIT are granted.
        assert len(accepted) == LIMIT
        assert len(denied) == len(books) - LIMIT
        assert {o.reason for o in denied} == {"limit"}
        assert all(o.lent == [] for o in denied)
        assert all(len(o.lent) == 1 for o in accepted)
        lent = sorted(b for o in accepted for b in o.lent)
        assert lent == holdings
        assert len(holdings) == LIMIT
        # Every book of a denied request went back where it was: nothing is left reserved.
        await assert_audit_ok(r)
    finally:
        await r.aclose()


async def test_50_users_requesting_the_same_book_exactly_one_gets_it(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    start_library(start_worker, redis_server)
    users = [f"user-{i:02d}" for i in range(50)]
    r = async_redis(redis_server)
    try:
        async with AsyncClient(redis_server.url) as client:
            # The first half arrive as one burst (one MULTI of XADDs, the way any producer
            # may write, see `bookstream info`), so they meet while the first one's fetch
            # from the shelves is in flight; the second half race through the client.
            burst = users[:25]
            burst_ids = [f"burst-{user}" for user in burst]
            async with r.pipeline(transaction=True) as pipe:
                for user, rid in zip(burst, burst_ids, strict=True):
                    event = RequestEvent(
                        v=SCHEMA_VERSION, id=rid, user=user, books=["the-one-book"]
                    )
                    pipe.xadd(LibraryKeys("main").inbox("lending"), {"e": encode_event(event)})
                await pipe.execute()
            outcomes = await asyncio.gather(
                *(client.outcome(rid, timeout=TIMEOUT) for rid in burst_ids),
                *(client.request(user, ["the-one-book"], timeout=TIMEOUT) for user in users[25:]),
            )
            assert [o.user for o in outcomes] == users
            # While the book was paged for one request, the others saw it reserved.
            assert any(u.reason == "reserved" for o in outcomes for u in o.unavailable)
            accepted = [o for o in outcomes if o.status == "accepted"]
            assert len(accepted) == 1, [o.status for o in outcomes]
            winner = accepted[0].user
            assert accepted[0].lent == ["the-one-book"]
            assert accepted[0].books_in_hand == ["the-one-book"]
            denied = [o for o in outcomes if o.status == "denied"]
            assert len(denied) == 49
            for o in denied:
                assert o.reason == "none_available"
                assert o.lent == []
                assert o.books_in_hand == []
                assert len(o.unavailable) == 1
                assert o.unavailable[0].book == "the-one-book"
                assert o.unavailable[0].reason in ("lent", "reserved")
            location = await client.locate("the-one-book")
            assert (location.status, location.user) == ("checked_out", winner)
            for user in users:
                assert await client.user_books(user) == (["the-one-book"] if user == winner else [])
        await assert_audit_ok(r)
    finally:
        await r.aclose()


async def test_same_request_id_20_times_concurrently_one_loan_identical_outcomes(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    start_library(start_worker, redis_server)
    rid = "retry-me-0001"
    r = async_redis(redis_server)
    try:
        async with AsyncClient(redis_server.url) as client:

            async def submit_then_wait() -> Outcome:
                await client.submit_request("retrier", ["dune", "emma"], request_id=rid)
                return await client.outcome(rid, timeout=TIMEOUT)

            # Half through request() (which may find the outcome already there and not
            # submit), half through submit_request(), which always reaches the inbox.
            outcomes = await asyncio.gather(
                *(
                    client.request("retrier", ["dune", "emma"], request_id=rid, timeout=TIMEOUT)
                    if i % 2
                    else submit_then_wait()
                    for i in range(20)
                )
            )
            first = outcomes[0]
            assert first.status == "accepted"
            assert first.request_id == rid
            assert first.lent == ["dune", "emma"]
            assert all(o == first for o in outcomes), {o.to_dict().__repr__() for o in outcomes}
            assert await client.user_books("retrier") == ["dune", "emma"]
            # A later retry under the same id with the books in another order gets the
            # first outcome; naming other books it is refused. Neither lends anything more.
            again = await client.request("retrier", ["emma", "dune"], request_id=rid)
            assert again == first
            with pytest.raises(BadInput, match="other books"):
                await client.request("retrier", ["dune", "emma", "ulysses"], request_id=rid)
            assert await client.user_books("retrier") == ["dune", "emma"]
        await wait_quiescent(r)
        assert await count_outcomes_for(r, "main", rid) == 1
        await assert_audit_ok(r)
    finally:
        await r.aclose()


async def test_same_request_id_through_the_cli_twice_gives_the_same_json(
    redis_server: RedisServer, start_worker: StartWorker, bookstream_env: dict[str, str]
) -> None:
    start_library(start_worker, redis_server)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "bookstream"), *args, "--redis", redis_server.url],
            capture_output=True,
            text=True,
            env=bookstream_env,
            timeout=60,
            check=False,
        )

    argv = (
        "request",
        "cli-user",
        "geb",
        "book, with a comma",
        "--request-id",
        "cli-rid-1",
        "--json",
    )
    first = cli(*argv)
    second = cli(*argv)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    out = json.loads(first.stdout)
    assert out["request_id"] == "cli-rid-1"
    assert out["status"] == "accepted"
    assert sorted(out["lent"]) == ["book, with a comma", "geb"]
    assert set(out) >= set(Outcome.__struct_fields__)

    r = async_redis(redis_server)
    try:
        await wait_quiescent(r)
        assert await count_outcomes_for(r, "main", "cli-rid-1") == 1
        async with AsyncClient(redis_server.url) as client:
            assert await client.user_books("cli-user") == ["book, with a comma", "geb"]
        await assert_audit_ok(r)
    finally:
        await r.aclose()


async def test_mixed_concurrent_requests_and_returns_keep_every_invariant(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    """30 users, each running 10 operations one after the other, all users at once.

    A user's loans change only through that user's own operations, which run in order,
    so each outcome can be checked exactly against the previous one even though other
    users compete for the same 40 books (and a small automated storage overflows).
    """
    capacity = 4
    start_library(start_worker, redis_server, lending=3, shelving=2, capacity=capacity)
    pool = [f"title-{i:02d}" for i in range(40)]
    rng = random.Random(20240611)
    plans: dict[str, list[tuple[str, list[str]]]] = {}
    for u in range(30):
        user_rng = random.Random(rng.random())
        ops: list[tuple[str, list[str]]] = []
        for _ in range(10):
            kind = "request" if user_rng.random() < 0.6 else "return"
            ops.append((kind, [user_rng.choice(pool) for _ in range(user_rng.randint(1, 4))]))
        plans[f"member-{u:02d}"] = ops

    async def run_user(client: AsyncClient, user: str) -> tuple[list[str], int]:
        held: set[str] = set()
        steps = 0
        for kind, named in plans[user]:
            if kind == "return":
                # Mostly books the user holds, sometimes one they do not.
                named = sorted(held)[: len(named)] + named[:1]
                outcome = await client.return_books(user, named, timeout=TIMEOUT)
                check_return(outcome, user, named, held)
            else:
                outcome = await client.request(user, named, timeout=TIMEOUT)
                check_request(outcome, user, named, held)
            held = set(outcome.books_in_hand)
            steps += 1
        return sorted(held), steps

    r = async_redis(redis_server)
    try:
        async with AsyncClient(redis_server.url) as client:
            results = await asyncio.gather(*(run_user(client, u) for u in plans))
            for user, (held, steps) in zip(plans, results, strict=True):
                assert steps == 10
                assert await client.user_books(user) == held
                assert len(held) <= LIMIT
        everyone = [b for held, _ in results for b in held]
        assert len(everyone) == len(set(everyone)), "a book is lent to two users"
        await assert_audit_ok(r, storage_capacity=capacity)
    finally:
        await r.aclose()


def check_request(o: Outcome, user: str, named: list[str], held: set[str]) -> None:
    wanted = set(named)
    assert (o.kind, o.user) == ("request", user)
    unavailable = {u.book: u.reason for u in o.unavailable}
    assert len(unavailable) == len(o.unavailable), "a book reported unavailable twice"
    assert {b for b, why in unavailable.items() if why == "held_by_you"} == wanted & held
    assert all(why in ("lent", "reserved", "held_by_you") for why in unavailable.values())
    assert len(o.books_in_hand) <= LIMIT
    if o.status == "accepted":
        assert o.lent and set(o.lent) | set(unavailable) == wanted
        assert not set(o.lent) & set(unavailable)
        assert set(o.books_in_hand) == held | set(o.lent)
    else:
        assert o.status == "denied" and o.lent == []
        assert set(o.books_in_hand) == held
        if o.reason == "none_available":
            assert set(unavailable) == wanted
        else:
            assert o.reason == "limit"
            assert len(held) + len(wanted - set(unavailable)) > LIMIT


def check_return(o: Outcome, user: str, named: list[str], held: set[str]) -> None:
    assert (o.kind, o.user) == ("return", user)
    assert sorted(o.returned) == sorted(set(named) & held)
    assert sorted(o.not_held) == sorted(set(named) - held)
    assert set(o.books_in_hand) == held - set(named)
    if o.returned:
        assert (o.status, o.reason) == ("processed", None)
    else:
        assert (o.status, o.reason) == ("denied", "not_held")


async def test_one_async_client_carries_100_concurrent_requests(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    """Regression: each wait used to hold its own Pub/Sub connection, and redis-py 8's
    pool (100 connections by default) failed the 100th concurrent request with
    ``Unreachable('... Too many connections')`` although Redis was fine."""
    start_library(start_worker, redis_server)
    async with AsyncClient(redis_server.url) as client:
        results = await asyncio.gather(
            *(client.request(f"reader-{i}", [f"tome-{i}"], timeout=TIMEOUT) for i in range(100)),
            return_exceptions=True,
        )
    errors = [e for e in results if isinstance(e, BaseException)]
    if errors:
        raise errors[0]
    assert [o.status for o in results if isinstance(o, Outcome)] == ["accepted"] * 100
