"""A Lending worker's admission loop (bookstream_core/admitting.py) with a real worker:
submissions are admitted in order as they come, a worker that dies while waiting loses
none, and Redis refusing the admission makes the worker not ready (one line when it
starts, one when it ends) without losing what waits."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

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
    # Frozen while it waits in BLMOVE, then killed: the wait took nothing from the list.
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
    r.delete(KEYS.submissions)
    wait_for(lambda: http_get(port, "/readyz")[0] == 200, timeout=20)
    with Client(redis_server.url) as client:
        assert client.request("u", ["x"], timeout=20).status == "accepted"
    out = worker.output()
    assert out.count("redis refuses to admit submissions") == 1
    assert out.count("admitting submissions again") == 1
    assert "Traceback" not in out
