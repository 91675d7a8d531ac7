"""Poison: 1,000 hostile entries written straight into the inbox streams, mixed with 5,000
valid ones. Every hostile entry ends in a dead-letter stream with a reason, every valid one
has its normal outcome, the drain takes at most twice as long as a clean run of the same
valid events measured in the same test, and the audit passes."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

import redis

from tests.conftest import RedisServer, WorkerProcess

VALID = 5000
HOSTILE = 1000
ARGS = ["--log-level", "warning"]


def _valid_events(library: str) -> list[dict[str, str]]:
    rng = random.Random(1)
    events, held = [], {}
    for n in range(VALID):
        user = f"u{rng.randrange(300)}"
        if held.get(user) and rng.random() < 0.3:
            event = {
                "v": 1,
                "type": "return",
                "id": f"{library}-{n}",
                "user": user,
                "books": [held[user].pop()],
            }
        else:
            books = rng.sample(range(3000), k=rng.randint(1, 3))
            held.setdefault(user, []).extend(f"b{b}" for b in books)
            event = {
                "v": 1,
                "type": "request",
                "id": f"{library}-{n}",
                "user": user,
                "books": [f"b{b}" for b in books],
            }
        events.append({"e": json.dumps(event)})
    return events


def _hostile(n: int) -> tuple[dict[str, str | bytes], str]:
    """One hostile entry and the stream it goes to (both inboxes get some)."""
    base = {"v": 1, "type": "request", "id": f"h-{n}", "user": "mallory", "books": ["b1"]}
    kind = n % 10
    stream = "shelving" if n % 4 == 0 else "lending"
    if kind == 0:
        return {"x": "no e field"}, stream
    if kind == 1:
        return {"e": json.dumps({**base, "books": "b1"})}, stream  # wrong type
    if kind == 2:
        return {"e": '{"v": 1, "type": "request", "id": "h-'}, stream  # invalid JSON
    if kind == 3:
        return {"e": json.dumps({**base, "v": 2})}, stream  # unknown schema version
    if kind == 4:
        big = "x" * (1024 * 1024) if n < 30 else "x" * 100_000
        return {"e": json.dumps({**base, "books": [big]})}, stream  # huge value
    if kind == 5:
        return {"e": json.dumps({**base, "library": "elsewhere"})}, stream  # unknown library
    if kind == 6:
        return {"e": json.dumps({**base, "user": "bad\x00user\x1b[31m"})}, stream
    if kind == 7:
        return {"e": json.dumps({**base, "id": "id with\nnewline"})}, stream
    if kind == 8:
        return {"e": b"\xff\xfe\x00binary"}, stream
    return {"e": json.dumps({**base, "type": "fetched", "id": f"ghost-{n}"})}, "lending"


def _drain(
    r: redis.Redis, library: str, entries: list[tuple[str, dict[str, str | bytes]]], valid: int
) -> float:
    started = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for stream, fields in entries:
        pipe.xadd(f"bs:{{{library}}}:{stream}:inbox", fields)  # type: ignore[arg-type]
    pipe.execute()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = (
            int(r.xinfo_stream(f"bs:{{{library}}}:events")["entries-added"])
            if r.exists(f"bs:{{{library}}}:events")
            else 0
        )
        # Nothing pending and nothing after the last delivered entry (see streams.py).
        idle = all(
            not g["pending"]
            and not r.xrange(
                f"bs:{{{library}}}:{s}:inbox", min=f"({g['last-delivered-id'].decode()}", count=1
            )
            for s in ("lending", "shelving")
            for g in r.xinfo_groups(f"bs:{{{library}}}:{s}:inbox")
        )
        if done >= valid and idle:
            return time.perf_counter() - started
        time.sleep(0.02)
    raise AssertionError(f"{library} did not drain")


def test_poison(redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]) -> None:
    r = redis_server.client()
    for library in ("clean", "poison"):
        start_worker("lending", redis_server, name=f"{library}-l", library=library, extra=ARGS)
        start_worker("shelving", redis_server, name=f"{library}-s", library=library, extra=ARGS)

    clean = _drain(r, "clean", [("lending", e) for e in _valid_events("clean")], VALID)

    mixed: list[tuple[str, dict[str, str | bytes]]] = [
        ("lending", e) for e in _valid_events("poison")
    ]
    rng = random.Random(2)
    for n in range(HOSTILE):
        fields, stream = _hostile(n)
        mixed.insert(rng.randrange(len(mixed) + 1), (stream, fields))
    poisoned = _drain(r, "poison", mixed, VALID)

    dead = r.xlen("bs:{poison}:lending:dead") + r.xlen("bs:{poison}:shelving:dead")
    assert dead == HOSTILE
    for stream in ("lending", "shelving"):
        for _, fields in r.xrange(f"bs:{{poison}}:{stream}:dead"):
            assert fields[b"reason"], fields
            assert all(len(v) <= 8 * 1024 for k, v in fields.items() if k.startswith(b"f."))
    # Every valid event has its normal (not rejected) outcome, once.
    outcomes = [json.loads(f[b"e"]) for _, f in r.xrange("bs:{poison}:events")]
    valid_ids = {f"poison-{n}" for n in range(VALID)}
    normal = [o for o in outcomes if o["request_id"] in valid_ids]
    assert len(normal) == VALID
    assert {o["request_id"] for o in normal} == valid_ids
    assert all(o["status"] != "rejected" for o in normal)
    print(f"poison: clean drain {clean:.2f}s, with {HOSTILE} hostile entries {poisoned:.2f}s")
    assert poisoned <= 2 * clean + 0.5, (clean, poisoned)

    from bookstream import Client

    with Client(redis_server.url, library="poison") as client:
        assert client.outcome("h-1", timeout=1).status == "rejected"
    import asyncio

    import redis.asyncio as aioredis
    from bookstream.audit import audit

    async def check() -> None:
        ar = aioredis.Redis(unix_socket_path=str(redis_server.socket))
        report = await audit(ar, "poison")
        await ar.aclose()
        assert report.ok, report.violations

    asyncio.run(check())
