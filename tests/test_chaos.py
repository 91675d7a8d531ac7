"""Chaos: workers SIGKILLed and restarted every ~0.5 s, Redis killed and restarted once,
while concurrent clients submit thousands of mixed requests and returns.

Afterwards every submitted request id has exactly one outcome, no book was lent twice, no
user is over the limit, the audit passes and no group has pending entries.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from functools import partial

import msgspec
import redis.asyncio as aioredis
from bookstream import AsyncClient, Unreachable
from bookstream.audit import audit
from bookstream_core.events import decode_outcome
from bookstream_core.streams import backlog

from tests.conftest import RedisServer, WorkerProcess

CLIENTS = 10
EVENTS_PER_CLIENT = 520
BOOKS = [f"book-{i}" for i in range(400)]
WORKER_ARGS = ["--claim-idle-ms", "1000", "--log-level", "warning"]
WORKER_ENV = {"BOOKSTREAM_LOCK_TTL_MS": "1500"}


async def _retry(call: Callable[[], object]) -> object:
    """Redis may be down for a moment: retry the same call (safe: same request id)."""
    for _ in range(200):
        try:
            return await call()  # type: ignore[misc]
        except Unreachable:
            await asyncio.sleep(0.1)
    raise AssertionError("Redis did not come back")


async def _client(url: str, index: int, submitted: list[str]) -> None:
    rng = random.Random(index)
    users = [f"user-{index}-{u}" for u in range(8)]
    asked: dict[str, list[str]] = {u: [] for u in users}
    async with AsyncClient(url) as client:
        for n in range(EVENTS_PER_CLIENT):
            user = rng.choice(users)
            rid = f"c{index}-{n}"
            if asked[user] and rng.random() < 0.3:
                books = rng.sample(asked[user], k=min(len(asked[user]), rng.randint(1, 2)))
                await _retry(partial(client.submit_return, user, books, request_id=rid))
            else:
                books = rng.sample(BOOKS, k=rng.randint(1, 3))
                asked[user].extend(books)
                await _retry(partial(client.submit_request, user, books, request_id=rid))
            submitted.append(rid)
            await asyncio.sleep(0.02)  # spread the load over the chaos (~10 s)
            if n % 25 == 24:  # and wait for this one's outcome now and then
                await _retry(partial(client.outcome, rid, timeout=30))


async def _chaos(
    server: RedisServer,
    start: Callable[..., WorkerProcess],
    workers: list[WorkerProcess],
    stop: asyncio.Event,
    stats: Counter[str],
) -> list[asyncio.Task[WorkerProcess]]:
    """Every ~0.5 s SIGKILL a random worker (keeping one of its service alive) and start a
    replacement in the background, under its own name (-f, like a pod) or a new one."""
    rng = random.Random(7)
    restarts: list[asyncio.Task[WorkerProcess]] = []
    alive = list(workers)
    began = time.monotonic()

    async def replace(victim: WorkerProcess) -> WorkerProcess:
        if rng.random() < 0.5:
            name, extra = victim.name, ["-f"]
        else:
            stats["new_names"] += 1
            name, extra = f"{victim.service}-r{stats['kills']}", []
        worker = await asyncio.to_thread(
            start, victim.service, server, name=name, extra=WORKER_ARGS + extra, env=WORKER_ENV
        )
        alive.append(worker)
        return worker

    while not stop.is_set():
        await asyncio.sleep(0.5)
        if stats["redis_restarts"] == 0 and time.monotonic() - began > 4:
            await asyncio.gather(*restarts)  # workers start only while Redis is up
            server.kill()  # SIGKILL: with appendfsync always nothing acknowledged is lost
            await asyncio.sleep(0.3)
            server.start()
            stats["redis_restarts"] += 1
            continue
        victim = rng.choice(alive)
        if sum(w.service == victim.service for w in alive) < 2:
            continue
        alive.remove(victim)
        victim.kill()
        stats["kills"] += 1
        restarts.append(asyncio.create_task(replace(victim)))
    await asyncio.gather(*restarts)
    return restarts


async def _quiescent(r: aioredis.Redis, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for service in ("lending", "shelving"):
            inbox = f"bs:{{main}}:{service}:inbox"
            for group in await r.xinfo_groups(inbox):
                busy |= bool(group["pending"]) or await backlog(r, inbox, group) != 0
        if not busy:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("streams did not drain")


async def test_chaos(
    redis_factory: Callable[..., RedisServer], start_worker: Callable[..., WorkerProcess]
) -> None:
    server = redis_factory(appendfsync="always")
    workers = [
        await asyncio.to_thread(
            start_worker, service, server, name=f"{service}-{i}", extra=WORKER_ARGS, env=WORKER_ENV
        )
        for service, i in [
            ("lending", 0),
            ("lending", 1),
            ("lending", 2),
            ("shelving", 0),
            ("shelving", 1),
        ]
    ]
    submitted: list[str] = []
    stats: Counter[str] = Counter()
    stop = asyncio.Event()
    chaos = asyncio.create_task(_chaos(server, start_worker, workers, stop, stats))
    await asyncio.gather(*(_client(server.url, i, submitted) for i in range(CLIENTS)))
    stop.set()
    await chaos

    assert len(submitted) == CLIENTS * EVENTS_PER_CLIENT >= 5000
    print(f"chaos: {len(submitted)} events, {dict(stats)}")
    assert stats["kills"] >= 15 and stats["redis_restarts"] == 1, stats
    r = aioredis.Redis(unix_socket_path=str(server.socket))
    try:
        await _quiescent(r)
        # Exactly one outcome per request id, in the stored outcomes and in the history.
        for i in range(0, len(submitted), 500):
            chunk = submitted[i : i + 500]
            values = await r.mget([f"bs:{{main}}:outcome:{rid}" for rid in chunk])
            missing = [rid for rid, v in zip(chunk, values, strict=True) if v is None]
            assert not missing, f"no outcome for {missing[:10]}"
            for rid, value in zip(chunk, values, strict=True):
                outcome = decode_outcome(value)
                assert outcome.request_id == rid and outcome.status != "rejected", outcome
        history: Counter[str] = Counter()
        for _, fields in await r.xrange("bs:{main}:events"):
            history[msgspec.json.decode(fields[b"e"])["request_id"]] += 1
        assert set(history) == set(submitted)
        assert max(history.values()) == 1
        # No book lent twice, nobody over the limit, nothing left over (audit replays
        # the history too).
        report = await audit(r, "main")
        assert report.ok, report.violations
        assert report.outcomes_replayed == len(submitted)
    finally:
        await r.aclose()
