"""A real Prometheus scrapes real lending and shelving workers while requests flow, and every
PromQL query of the Grafana dashboard returns data from it."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bookstream import Client

from tests.conftest import RedisServer, WorkerProcess, free_port
from tests.deploy import tools

pytestmark = pytest.mark.timeout(300)

SCRAPE_INTERVAL = "1s"
# What Grafana substitutes in the dashboard's queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$library": ".*"}


def substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


class Prometheus:
    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[int]], Prometheus]]:
    exe = shutil.which("prometheus")
    if exe is None:
        tools.missing_tool(
            "prometheus is not installed (apt-get install prometheus; make test does)"
        )
    procs: list[subprocess.Popen[bytes]] = []

    def start(ports: list[int]) -> Prometheus:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE_INTERVAL}\n"
            f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
            "scrape_configs:\n"
            "  - job_name: bookstream\n"
            "    static_configs:\n"
            f"      - targets: {json.dumps([f'127.0.0.1:{p}' for p in ports])}\n"
        )
        port = free_port()
        log = tmp_path / "prometheus.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [
                    exe,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return prom
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _traffic(url: str, stop: threading.Event) -> None:
    """Requests, returns, denials of every kind, until told to stop."""
    with Client(url) as client:
        i = 0
        while not stop.is_set():
            user = f"user{i % 7}"
            client.request(user, [f"book-{i}", f"book-{i + 1}"])
            client.request(f"other{i % 5}", [f"book-{i}"])  # lent already: denied, none_available
            client.return_books(user, [f"book-{i}"])
            client.return_books(user, ["never-lent"])  # denied, not_held
            client.request(f"greedy{i}", [f"g{i}-{k}" for k in range(6)])  # denied, limit
            i += 2
            time.sleep(0.05)


def test_every_dashboard_query_returns_data(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    prometheus: Callable[[list[int]], Prometheus],
) -> None:
    workers = [
        start_worker("lending", redis_server, name="lending-0", metrics=True),
        start_worker("lending", redis_server, name="lending-1", metrics=True),
        start_worker("shelving", redis_server, name="shelving-0", metrics=True),
    ]
    ports = [w.metrics_port for w in workers if w.metrics_port is not None]
    prom = prometheus(ports)

    # A malformed entry in the lending inbox: a dead letter, counted and shown.
    redis_server.client().xadd("bs:{main}:lending:inbox", {"garbage": "not an event"})
    stop = threading.Event()
    thread = threading.Thread(target=_traffic, args=(redis_server.url, stop), daemon=True)
    thread.start()
    try:
        # Wait for every target to be up and for several scrapes of the traffic.
        deadline = time.monotonic() + 90
        while True:
            targets = prom.api("targets")["activeTargets"]
            up = [t for t in targets if t["health"] == "up"]
            lent = prom.query("sum(bookstream_books_lent_total)")
            dead = prom.query("sum(bookstream_dead_letters_total)")
            if len(up) == len(ports) and lent and dead and float(lent[0]["value"][1]) > 20:
                break
            assert thread.is_alive(), "the traffic generator died"
            assert time.monotonic() < deadline, (targets, lent, dead)
            time.sleep(1)
        time.sleep(5)  # a few more scrapes so that rate() over the window has data

        exprs = tools.dashboard_exprs()
        assert len(exprs) >= 15
        empty: list[str] = []
        for panel in tools.dashboard()["panels"]:
            for target in panel.get("targets", []):
                expr = substitute(target["expr"])
                result = prom.query(expr)
                values = [float(r["value"][1]) for r in result]
                if not result or all(math.isnan(v) for v in values):
                    empty.append(f"{panel['title']}: {expr}")
                    continue
                # Every label the legend names is in the result.
                for label in re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")):
                    assert all(label in r["metric"] for r in result), (expr, label, result)
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    finally:
        stop.set()
        thread.join(timeout=30)

    # The numbers mean what they say: outcomes by status, and two lending replicas.
    statuses = {
        r["metric"]["status"] for r in prom.query("sum by (status) (bookstream_requests_total)")
    }
    assert {"accepted", "denied"} <= statuses, statuses
    dead = prom.query("sum by (service, reason) (bookstream_dead_letters_total)")
    assert [r["metric"]["service"] for r in dead] == ["lending"], dead
    reasons = {
        r["metric"]["reason"] for r in prom.query("sum by (reason) (bookstream_denials_total)")
    }
    assert {"none_available", "limit", "not_held"} <= reasons, reasons
    replicas = {
        r["metric"]["service"]: float(r["value"][1])
        for r in prom.query("count by (service) (bookstream_worker_ready)")
    }
    assert replicas == {"lending": 2.0, "shelving": 1.0}
