"""The metrics/health port listens where it is told (--metrics-host, BOOKSTREAM_METRICS_HOST)
and only there: the loopback by default, since it answers anyone who reaches it."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import RedisServer, WorkerProcess, free_port, worker_command

# Two loopback addresses: a socket bound to one refuses connections made to the other.
ONE, OTHER = "127.0.0.1", "127.0.0.2"


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            return conn.recv(64).startswith(b"HTTP/1.1 200")
    except ConnectionRefusedError:
        return False


@pytest.mark.parametrize(
    ("how", "reachable", "unreachable"),
    [
        ({}, ONE, OTHER),  # the default: loopback only
        ({"extra": ["--metrics-host", OTHER]}, OTHER, ONE),
        ({"env": {"BOOKSTREAM_METRICS_HOST": OTHER}}, OTHER, ONE),
    ],
    ids=["default", "option", "variable"],
)
def test_the_metrics_port_binds_where_told(
    start_worker: Callable[..., WorkerProcess],
    redis_server: RedisServer,
    how: dict[str, object],
    reachable: str,
    unreachable: str,
) -> None:
    worker = start_worker("lending", redis_server, metrics=True, **how)
    assert worker.metrics_port is not None
    assert answers(reachable, worker.metrics_port)
    assert not answers(unreachable, worker.metrics_port)


def test_every_interface_when_told(
    start_worker: Callable[..., WorkerProcess], redis_server: RedisServer
) -> None:
    worker = start_worker(
        "shelving", redis_server, metrics=True, extra=["--metrics-host", "0.0.0.0"]
    )
    assert worker.metrics_port is not None
    assert answers(ONE, worker.metrics_port) and answers(OTHER, worker.metrics_port)


def test_an_address_it_cannot_bind_is_one_line_and_exit_1(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    port = free_port()
    proc = subprocess.run(
        [worker_command("lending"), "l1", "--redis", redis_server.url],
        capture_output=True,
        text=True,
        timeout=30,
        # 192.0.2.1 (TEST-NET-1) is on no interface of this machine.
        env={
            **bookstream_env,
            "BOOKSTREAM_METRICS_PORT": str(port),
            "BOOKSTREAM_METRICS_HOST": "192.0.2.1",
        },
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"bookstream-lending: error: cannot serve metrics on 192.0.2.1:{port}"
    )
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
