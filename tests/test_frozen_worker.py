"""A worker frozen between reading a batch and applying it (GC pause, VM freeze,
SIGSTOP) that resumes after --retention must not apply the batch again: by then its
entries were claimed and applied by a live worker, and the outcome and idempotency
records that once caught a second application have expired. The XACK inside each call
fences it: the stale batch is a no-op."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable

import redis
import redis.asyncio as aioredis
from bookstream_core.config import DomainSettings, RuntimeSettings
from bookstream_core.keys import LibraryKeys
from bookstream_lending.functions import LendingFunctions

from tests.conftest import RedisServer, WorkerProcess, run_cli, wait_for

LIB = "frozen"
KEYS = LibraryKeys(LIB)
INBOX = KEYS.inbox("lending")
FAST = ["--retention", "1", "--claim-idle-ms", "300", "--log-level", "warning"]


def _request_all(r: redis.Redis, ids: list[str], *, users: int) -> list[str]:
    """One request of its own book per id, straight into the inbox; the ids."""
    pipe = r.pipeline(transaction=False)
    for n, rid in enumerate(ids):
        event = {"v": 1, "type": "request", "id": rid, "user": f"u{n % users}", "books": [f"b{n}"]}
        pipe.xadd(INBOX, {"e": json.dumps(event)})
    pipe.execute()
    return ids


def _outcome_ids(r: redis.Redis) -> list[str]:
    return [json.loads(f[b"e"])["request_id"] for _, f in r.xrange(KEYS.domain_events)]


def test_a_stale_batch_applied_after_the_retention_is_a_no_op(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    r = redis_server.client()
    r.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    for n in range(20):
        event = {"v": 1, "type": "request", "id": f"q{n}", "user": f"u{n}", "books": [f"b{n}"]}
        r.xadd(INBOX, {"e": json.dumps(event)})
    # The "frozen" worker has read the batch and stops right there.
    ((_, batch),) = r.xreadgroup("lending", "frozen", {INBOX: ">"})
    for service in ("lending", "shelving"):
        start_worker(service, redis_server, library=LIB, extra=FAST)
    wait_for(lambda: len(_outcome_ids(r)) == 20, timeout=30)
    # The retention passes: outcome and idempotency records are gone.
    wait_for(lambda: not r.exists(KEYS.outcome("q0")), timeout=10)
    loans_before = {k: r.smembers(k) for k in r.scan_iter(f"bs:{{{LIB}}}:lending:loans:*")}

    async def resume() -> list[str]:
        ar = aioredis.Redis(unix_socket_path=str(redis_server.socket))
        try:
            events = []
            for entry_id, fields in batch:
                e = json.loads(fields[b"e"])
                events.append((entry_id, e["type"], e["id"], e["user"], e["books"]))
            fn = LendingFunctions(ar, KEYS)
            rows = await fn.apply(INBOX, DomainSettings(), RuntimeSettings(retention_s=1), events)
            return [row.status for row in rows]
        finally:
            await ar.aclose()

    assert asyncio.run(resume()) == ["stale"] * 20
    assert sorted(_outcome_ids(r)) == sorted(f"q{n}" for n in range(20))  # one outcome each
    after = {k: r.smembers(k) for k in r.scan_iter(f"bs:{{{LIB}}}:lending:loans:*")}
    assert after == loans_before
    assert r.xlen(KEYS.inbox("shelving")) <= 20  # no second fetch
    done = run_cli(bookstream_env, "audit", "--library", LIB, server=redis_server)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_real_worker_stopped_past_the_retention_applies_nothing_twice(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    r = redis_server.client()
    slow = start_worker("lending", redis_server, name="slow", library=LIB, extra=FAST)
    start_worker("shelving", redis_server, library=LIB, extra=FAST)
    ids = _request_all(r, [f"s{n}" for n in range(300)], users=50)
    slow.process.send_signal(signal.SIGSTOP)  # mid-drain, batches read and not applied
    try:
        start_worker("lending", redis_server, name="live", library=LIB, extra=FAST)
        wait_for(lambda: set(_outcome_ids(r)) >= set(ids), timeout=60)
        time.sleep(1.5)  # past the retention: the records that caught replays expire
    finally:
        slow.process.send_signal(signal.SIGCONT)
    # The stopped worker lost its name meanwhile only if someone took it; either way,
    # once it has run again nothing is applied twice.
    wait_for(lambda: _drained(r), timeout=30)
    time.sleep(0.5)
    outcomes = _outcome_ids(r)
    assert sorted(outcomes) == sorted(ids), "an outcome was written twice"
    done = run_cli(bookstream_env, "audit", "--library", LIB, server=redis_server)
    assert done.returncode == 0, done.stdout + done.stderr


def _drained(r: redis.Redis) -> bool:
    for service in ("lending", "shelving"):
        inbox = KEYS.inbox(service)
        for group in r.xinfo_groups(inbox):
            last = group["last-delivered-id"].decode()
            if group["pending"] or r.xrange(inbox, min=f"({last}", count=1):
                return False
    return True


def test_a_worker_frozen_past_its_lock_and_retired_stops_when_it_wakes(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    """Frozen past its lock's TTL, its entries claimed and its consumer retired by a live
    worker: on waking it finds the retirement's tombstone in its lock and exits 1 (its
    pod restarts) instead of taking the name back; nothing is applied twice."""
    r = redis_server.client()
    fast = ["--claim-idle-ms", "500", "--log-level", "warning"]
    short_lock = {"BOOKSTREAM_LOCK_TTL_MS": "1000"}
    frozen = start_worker(
        "lending", redis_server, name="frozen", library=LIB, extra=fast, env=short_lock
    )
    start_worker("shelving", redis_server, library=LIB, extra=fast)
    ids = _request_all(r, [f"t{n}" for n in range(50)], users=50)
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        start_worker("lending", redis_server, name="live", library=LIB, extra=fast)
        wait_for(lambda: set(_outcome_ids(r)) >= set(ids), timeout=60)
        consumers = lambda: {c["name"] for c in r.xinfo_consumers(INBOX, "lending")}  # noqa: E731
        wait_for(lambda: b"frozen" not in consumers(), timeout=30)
        assert r.get(KEYS.worker_lock("lending", "frozen")) == b"retired"
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    assert frozen.process.wait(timeout=20) == 1
    assert "was taken over by another worker" in frozen.output()
    assert sorted(_outcome_ids(r)) == sorted(ids)
    done = run_cli(bookstream_env, "audit", "--library", LIB, server=redis_server)
    assert done.returncode == 0, done.stdout + done.stderr
    # The name is free again for a new worker (a pod restarted under it).
    start_worker("lending", redis_server, name="frozen", library=LIB, extra=fast)
