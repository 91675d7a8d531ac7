"""Redis goes away and comes back: the worker logs one line per state change, reports
not-ready meanwhile, and resumes with nothing lost."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

from bookstream import Client

from tests.conftest import RedisServer, WorkerProcess, wait_for


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_worker_survives_a_redis_outage(
    redis_factory: Callable[..., RedisServer], start_worker: Callable[..., WorkerProcess]
) -> None:
    server = redis_factory(appendfsync="always")
    lending = start_worker("lending", server, metrics=True)
    start_worker("shelving", server)
    assert lending.metrics_port is not None
    port = lending.metrics_port
    with Client(server.url) as client:
        assert client.request("u1", ["a"]).status == "accepted"
    assert readyz(port) == 200

    server.kill()
    wait_for(lambda: readyz(port) == 503, timeout=20)
    time.sleep(3)  # several retries happen meanwhile
    server.start()
    wait_for(lambda: readyz(port) == 200, timeout=20)

    with Client(server.url) as client:
        assert client.request("u1", ["b"], timeout=15).status == "accepted"
        assert client.user_books("u1") == ["a", "b"]
    log = lending.output()
    assert log.count("redis unreachable") == 1, log
    assert log.count("redis reachable again") == 1, log
    assert "Traceback" not in log
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        metrics = response.read().decode()
    assert 'bookstream_reconnects_total{library="main",service="lending"} 1.0' in metrics
