"""The Python client, like the CLI, says at once that no Lending worker would answer,
instead of waiting for its timeout (a newcomer's first ``Client().request``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from bookstream import AsyncClient, Client, NoWorker, OutcomeTimeout

from tests.conftest import RedisServer, WorkerProcess

SUBMISSIONS = "bs:{main}:lending:submissions"


def test_request_and_return_raise_no_worker_at_once(redis_server: RedisServer) -> None:
    with Client(redis_server.url) as client:
        for call in (client.request, client.return_books):
            started = time.monotonic()
            with pytest.raises(NoWorker, match="bookstream serve") as raised:
                call("u1", ["geb"], timeout=10)
            assert time.monotonic() - started < 5  # not the 10 s timeout
            assert "library 'main'" in str(raised.value)
        # Nothing was submitted; submitting without waiting still queues.
        assert redis_server.client().llen(SUBMISSIONS) == 0
        client.submit_request("u1", ["geb"])
        assert redis_server.client().llen(SUBMISSIONS) == 1


async def test_the_async_client_too_unless_told_to_wait(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    async with AsyncClient(redis_server.url, library="other") as client:
        with pytest.raises(NoWorker, match="library 'other'"):
            await client.request("u1", ["geb"])
    async with AsyncClient(redis_server.url, require_worker=False) as waiting:
        with pytest.raises(OutcomeTimeout):
            await waiting.request("u1", ["geb"], timeout=0.5)
    assert redis_server.client().llen(SUBMISSIONS) == 1  # queued, for a worker to come
    workers = [start_worker("lending", redis_server), start_worker("shelving", redis_server)]
    async with AsyncClient(redis_server.url) as client:
        first = await client.request("u2", ["gene"], request_id="r-gene", timeout=10)
        assert first.status == "accepted"
        for worker in workers:
            assert worker.terminate() == 0  # its name released: nobody serves the library
        with pytest.raises(NoWorker):
            await client.request("u3", ["geb"])
        # An outcome already stored needs no worker: asking again returns it.
        assert await client.request("u2", ["gene"], request_id="r-gene") == first
