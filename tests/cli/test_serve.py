"""``bookstream serve [NAME]``: one worker of each service in one process, like main.py."""

from __future__ import annotations

import json
import subprocess
import time

from bookstream import Client

from tests.conftest import VENV_BIN, RedisServer


def test_serve_runs_both_services_and_stops_on_sigterm(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    proc = subprocess.Popen(
        [str(VENV_BIN / "bookstream"), "serve", "worker1", "--redis", redis_server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=bookstream_env,
    )
    try:
        r = redis_server.client()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            r.exists("bs:{main}:worker:lending:worker1")
            and r.exists("bs:{main}:worker:shelving:worker1")
        ):
            time.sleep(0.05)
        with Client(redis_server.url) as client:
            outcome = client.request("user1", ["geb", "a, b"], timeout=10)
        assert (outcome.status, outcome.lent) == ("accepted", ["a, b", "geb"])
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    text = output.decode()
    assert "request accepted" in text  # one readable line per outcome
    assert "Traceback" not in text
    assert not r.exists("bs:{main}:worker:lending:worker1")
    assert (
        json.loads(r.get("bs:{main}:outcome:" + outcome.request_id) or b"{}")["status"]
        == "accepted"
    )
