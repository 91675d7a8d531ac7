"""One ``bookstream.Client`` shared by the 32 threads of a pool, as a web application
shares it, against real worker processes: bursts, one book wanted by many, one request
id submitted from every thread at once."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from bookstream import Client, ClientClosed, Outcome

from tests.conftest import RedisServer, WorkerProcess
from tests.test_concurrency import assert_audit_ok, async_redis

THREADS = 32


@pytest.fixture
def shared(served: RedisServer) -> Iterator[tuple[RedisServer, Client]]:
    client = Client(served.url)
    yield served, client
    client.close()


def test_bursts_from_32_threads(shared: tuple[RedisServer, Client]) -> None:
    server, client = shared
    with ThreadPoolExecutor(THREADS) as pool:
        for burst in range(3):

            def ask(i: int, burst: int = burst) -> Outcome:
                return client.request(f"u{i}", [f"b{burst}-{i}"], timeout=20)

            outcomes = list(pool.map(ask, range(THREADS * 4)))
            assert [o.status for o in outcomes] == ["accepted"] * THREADS * 4
            assert all(o.lent == [f"b{burst}-{i}"] for i, o in enumerate(outcomes))
    asyncio.run(_audit(server))


def test_one_book_wanted_by_32_threads_is_lent_once(shared: tuple[RedisServer, Client]) -> None:
    server, client = shared
    start = threading.Barrier(THREADS)

    def want(i: int) -> Outcome:
        start.wait()
        return client.request(f"reader{i}", ["the-one-book"], timeout=20)

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(want, range(THREADS)))
    assert Counter(o.status for o in outcomes) == {"accepted": 1, "denied": THREADS - 1}
    winner = next(o.user for o in outcomes if o.status == "accepted")
    assert client.locate("the-one-book").user == winner
    asyncio.run(_audit(server))


def test_one_id_replayed_by_32_threads_has_one_outcome(
    shared: tuple[RedisServer, Client],
) -> None:
    server, client = shared
    start = threading.Barrier(THREADS)

    def replay(_: int) -> Outcome:
        start.wait()
        return client.request("u", ["a", "b"], request_id="same-id", timeout=20)

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(replay, range(THREADS)))
    assert {o.to_dict()["request_id"] for o in outcomes} == {"same-id"}
    assert len({str(o.to_dict()) for o in outcomes}) == 1  # the same outcome for all
    assert outcomes[0].status == "accepted" and client.user_books("u") == ["a", "b"]
    asyncio.run(_audit(server))


def test_a_closed_client_says_so(redis_server: RedisServer) -> None:
    client = Client(redis_server.url)
    client.close()
    client.close()  # twice is fine
    with pytest.raises(ClientClosed):
        client.submit_request("u", ["a"])


async def _audit(server: RedisServer) -> None:
    r = async_redis(server)
    try:
        await assert_audit_ok(r)
    finally:
        await r.aclose()


def test_closing_the_client_ends_every_call_under_way(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Newcomer: close() while other threads waited for outcomes left them waiting for
    ever (past their timeouts). Each now gets ClientClosed at once."""
    lending = start_worker("lending", redis_server)
    lending.process.send_signal(signal.SIGSTOP)  # alive (its lock), answering nothing
    try:
        client = Client(redis_server.url)
        with ThreadPoolExecutor(8) as pool:
            calls = [pool.submit(client.request, f"u{i}", ["b"], timeout=60) for i in range(8)]
            time.sleep(1.0)  # every call is waiting for its outcome
            started = time.monotonic()
            client.close()
            for call in calls:
                with pytest.raises(ClientClosed):
                    call.result(timeout=10)
            assert time.monotonic() - started < 5
    finally:
        lending.process.send_signal(signal.SIGCONT)
