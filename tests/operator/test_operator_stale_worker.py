"""A live but stale worker: a real Lending worker frozen (SIGSTOP) past its lock's TTL
while it holds an entry, retired by the operator's scale-down, then resumed (SIGCONT):
every request has one outcome, the audit is clean, and the stale worker exits 1 (it
finds the retirement's tombstone in its lock) instead of working on under its name."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable

import redis
import redis.asyncio as aioredis
from bookstream_core.keys import LibraryKeys
from bookstream_operator import naming
from bookstream_operator.cleanup import ConsumerRetirer, RetirementResult

from tests.conftest import RedisServer, WorkerProcess, run_cli, wait_for

NS, INSTANCE, LIB = "shop", "main", "stale"
KEYS = LibraryKeys(LIB)
INBOX = KEYS.inbox("lending")
ARGS = ["--claim-idle-ms", "500", "--log-level", "warning"]


def _request(r: redis.Redis, rid: str) -> None:
    event = {"v": 1, "type": "request", "id": rid, "user": f"u-{rid}", "books": [f"b-{rid}"]}
    r.xadd(INBOX, {"e": json.dumps(event)})


def _outcomes(r: redis.Redis) -> list[str]:
    return [json.loads(f[b"e"])["request_id"] for _, f in r.xrange(KEYS.domain_events)]


def test_a_stale_worker_retired_by_the_operator_exits_and_nothing_is_doubled(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    r = redis_server.client()
    w0, w1 = (naming.worker_name(NS, INSTANCE, "lending", n) for n in (0, 1))
    start_worker("shelving", redis_server, library=LIB, extra=ARGS)
    stale = start_worker(
        "lending", redis_server, name=w1, library=LIB, extra=ARGS,
        env={"BOOKSTREAM_LOCK_TTL_MS": "1000"},
    )  # fmt: skip
    _request(r, "warm")
    wait_for(lambda: _outcomes(r) == ["warm"])
    time.sleep(0.3)  # idle now: blocked in XREADGROUP for the next entry
    stale.process.send_signal(signal.SIGSTOP)
    try:
        _request(r, "held")  # Redis hands it to the frozen worker: pending on w1
        wait_for(lambda: r.xpending(INBOX, "lending")["pending"] == 1)
        start_worker("lending", redis_server, name=w0, library=LIB, extra=ARGS)
        for n in range(20):
            _request(r, f"after{n}")
        wait_for(lambda: not r.exists(KEYS.worker_lock("lending", w1)), timeout=10)

        async def scale_down() -> list[RetirementResult]:
            client = aioredis.Redis(unix_socket_path=str(redis_server.socket))
            try:
                consumers = [
                    c["name"].decode() for c in await client.xinfo_consumers(INBOX, "lending")
                ]
                done = await ConsumerRetirer(client, KEYS).scale_down(
                    NS, INSTANCE, "lending", 1, consumers
                )
                return [d.outcome for d in done]
            finally:
                await client.aclose()

        assert asyncio.run(scale_down()) == [RetirementResult.RETIRED]
        assert r.get(KEYS.worker_lock("lending", w1)) == b"retired"
        wait_for(lambda: len(_outcomes(r)) == 22, timeout=30)
    finally:
        stale.process.send_signal(signal.SIGCONT)
    assert stale.process.wait(timeout=20) == 1
    assert "was taken over by another worker" in stale.output()
    time.sleep(0.5)
    assert sorted(_outcomes(r)) == sorted(["warm", "held", *(f"after{n}" for n in range(20))])
    done = run_cli(bookstream_env, "audit", "--library", LIB, server=redis_server)
    assert done.returncode == 0, done.stdout + done.stderr
