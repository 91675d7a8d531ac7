"""A Lending worker's admission loop (bookstream_core/admitting.py) with a real worker:
submissions are admitted in order as they come, a worker that dies while waiting loses
none, and Redis refusing the admission makes the worker not ready (one line when it
starts, one when it ends) without losing what waits."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

from bookstream import Client
from bookstream_core.keys import LibraryKeys

from tests.conftest import RedisServer, WorkerProcess, wait_for
from tests.test_metrics import http_get

KEYS = LibraryKeys("main")


def _event(n: int) -> str:
    return json.dumps({"v": 1, "type": "return", "id": f"a{n}", "user": "u", "books": ["b"]})


def test_submissions_are_admitted_in_order_and_none_is_lost_to_a_killed_worker(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    r = redis_server.client()
    first = start_worker("lending", redis_server, name="l1")
    wait_for(lambda: r.exists(KEYS.inbox("lending")))
    # Frozen while it waits for the doorbell, then killed: waiting took nothing.
    first.process.send_signal(signal.SIGSTOP)
    r.rpush(KEYS.submissions, *(_event(n) for n in range(50)))
    first.kill()
    assert r.llen(KEYS.submissions) == 50
    start_worker("lending", redis_server, name="l2")
    wait_for(lambda: r.llen(KEYS.submissions) == 0)
    admitted = [json.loads(f[b"e"])["id"] for _, f in r.xrange(KEYS.inbox("lending"))]
    assert admitted[-50:] == [f"a{n}" for n in range(50)]
    wait_for(lambda: all(r.exists(KEYS.outcome(f"a{n}")) for n in range(50)))


def test_a_refused_admission_is_redis_s_trouble_and_ends_when_it_is_mended(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """An admin's mistake (the list's key holds a string): the worker reports itself not
    ready and says so once; once the key is a list again, it admits and is ready."""
    r = redis_server.client()
    worker = start_worker("lending", redis_server, name="l1", metrics=True)
    start_worker("shelving", redis_server, name="s1")
    port = worker.metrics_port
    assert port is not None
    wait_for(lambda: http_get(port, "/readyz")[0] == 200)
    r.set(KEYS.submissions, "not a list")
    wait_for(lambda: http_get(port, "/readyz")[0] == 503)
    wait_for(lambda: "redis refuses to admit submissions" in worker.output())
    # Housekeeping goes on: the lag it cannot count is unknown (NaN), not a failure.
    lag = 'bookstream_stream_lag{library="main",service="lending"} NaN'
    wait_for(lambda: lag in http_get(port, "/metrics")[1], timeout=20)
    r.delete(KEYS.submissions)
    wait_for(lambda: http_get(port, "/readyz")[0] == 200, timeout=20)
    with Client(redis_server.url) as client:
        assert client.request("u", ["x"], timeout=20).status == "accepted"
    out = worker.output()
    assert out.count("redis refuses to admit submissions") == 1
    assert out.count("admitting submissions again") == 1
    assert "housekeeping failed" not in out
    assert "Traceback" not in out


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_huge_push_never_reaches_a_waiting_worker(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Breaker: workers waited with a blocking move of the list onto itself, so Redis sent
    each of them the element a client pushed, whatever its size (100 MB: 230 MB per
    worker). They wait on the doorbell now; the entry is cut in Redis and set aside."""
    r = redis_server.client()
    workers = [start_worker("lending", redis_server, name=f"l{n}") for n in (1, 2)]
    wait_for(lambda: r.exists(KEYS.inbox("lending")))
    before = [_peak_rss_mb(w.process.pid) for w in workers]
    big = json.dumps({"v": 1, "type": "request", "id": "big-1", "user": "u", "books": ["b"],
                      "pad": "x" * 1_000_000})  # fmt: skip
    r.rpush(KEYS.submissions, b"x" * 40_000_000, big)
    wait_for(lambda: r.xlen(KEYS.dead_letters("lending")) == 2, timeout=30)
    rejected = json.loads(r.get(KEYS.outcome("big-1")))  # type: ignore[arg-type]
    assert rejected["status"] == "rejected" and rejected["reason"].startswith("too_large")
    for worker, peak in zip(workers, before, strict=True):
        assert _peak_rss_mb(worker.process.pid) < peak + 20, worker.output()[-2000:]


def test_a_flood_of_junk_is_counted_not_logged_line_by_line(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Breaker: 50,000 one-byte pushes wrote a warning line each (11 MB of logs). Each
    call logs its first few dead letters and one line for the rest."""
    r = redis_server.client()
    worker = start_worker("lending", redis_server, name="l1")
    wait_for(lambda: r.exists(KEYS.inbox("lending")))
    r.rpush(KEYS.submissions, *[b"j"] * 3000)
    wait_for(lambda: r.xlen(KEYS.dead_letters("lending")) == 3000, timeout=60)
    wait_for(lambda: "more dead letters" in worker.output())
    lines = worker.output().splitlines()
    single = [line for line in lines if "dead letter " in line and "more dead" not in line]
    assert 0 < len(single) < 300, len(single)
