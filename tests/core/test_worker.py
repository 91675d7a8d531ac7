"""Real worker processes: poison entries, names, signals, recovery of a dead worker's entries."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
from bookstream import Client

from tests.conftest import RedisServer, WorkerProcess, admit, wait_for, worker_command

INBOX = "bs:{main}:lending:inbox"
EVENTS = "bs:{main}:events"


@pytest.mark.usefixtures("served")
def test_poison_entries_are_set_aside_and_nothing_behind_them_waits(
    redis_server: RedisServer,
) -> None:
    r = redis_server.client()
    hostile: list[dict[str, str | bytes]] = [
        {"e": "not json"},
        {"other": "field"},
        {"e": json.dumps({"v": 2, "type": "request", "id": "bad-v", "user": "u", "books": ["a"]})},
        {"e": json.dumps({"v": 1, "type": "request", "id": "bad-books", "user": "u", "books": []})},
        {
            "e": json.dumps(
                {"v": 1, "type": "request", "id": "ctl", "user": "u\x00", "books": ["a"]}
            )
        },
        {"e": json.dumps({"v": 1, "type": "steal", "id": "bad-type", "user": "u", "books": ["a"]})},
        {"e": b"\xff\xfe" * 10},
        {"e": "x" * (1024 * 1024)},
    ]
    for fields in hostile:
        r.xadd(INBOX, fields)  # type: ignore[arg-type]
    with Client(redis_server.url) as client:
        outcome = client.request("user1", ["geb"], timeout=10)
        assert outcome.status == "accepted"
        # An unknown event type is not a request: it has nobody to answer.
        for rid in ("bad-v", "bad-books", "ctl"):
            rejected = client.outcome(rid, timeout=5)
            assert rejected.status == "rejected", rid
            assert rejected.reason and rejected.reason.startswith("invalid_event"), rejected
    assert r.get("bs:{main}:outcome:bad-type") is None
    dead = r.xrange("bs:{main}:lending:dead")
    assert len(dead) == len(hostile)
    assert all(fields[b"reason"] for _, fields in dead)
    assert max(len(v) for _, f in dead for v in f.values()) <= 8 * 1024  # bounded copies
    assert r.xpending(INBOX, "lending")["pending"] == 0


def test_a_name_is_held_by_one_worker(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    start_worker("lending", redis_server, name="w1")
    second = subprocess.run(
        [worker_command("lending"), "w1", "--redis", redis_server.url],
        capture_output=True,
        text=True,
        env=bookstream_env,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert (
        "bookstream-lending: error: worker name 'w1' is held by another lending worker"
        in (second.stderr.splitlines())[-1]
    )
    assert "Traceback" not in second.stderr
    # -f takes the name anyway.
    start_worker("lending", redis_server, name="w1", extra=["-f"])


def test_a_crashed_workers_name_frees_itself(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    env = {"BOOKSTREAM_LOCK_TTL_MS": "600"}
    first = start_worker("lending", redis_server, name="w1", env=env)
    first.kill()
    r = redis_server.client()
    wait_for(lambda: not r.exists("bs:{main}:worker:lending:w1"), timeout=5)
    start_worker("lending", redis_server, name="w1", env=env)


def test_sigterm_stops_gracefully_and_releases_the_name(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("shelving", redis_server, name="s1")
    assert worker.terminate() == 0
    assert not redis_server.client().exists("bs:{main}:worker:shelving:s1")
    assert "worker stopped" in worker.output()


def test_sigterm_finishes_the_batches_in_flight(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Stopped in the middle of a backlog with several batches in flight, a worker lets
    every batch it sent finish: nothing it read is left pending in its name, and every
    entry it acknowledged has its outcome."""
    r = redis_server.client()
    r.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    pipe = r.pipeline(transaction=False)
    for i in range(30_000):
        event = {"v": 1, "type": "return", "id": f"ret-{i}", "user": f"u{i % 50}", "books": ["x"]}
        pipe.xadd(INBOX, {"e": json.dumps(event)})
    pipe.execute()
    worker = start_worker("lending", redis_server, extra=["--batch-size", "50", "--in-flight", "4"])

    def answered() -> int:
        return int(r.xinfo_stream("bs:{main}:events")["entries-added"]) if r.exists(EVENTS) else 0

    wait_for(lambda: answered() >= 2_000, timeout=30)
    assert worker.terminate() == 0
    group = r.xinfo_groups(INBOX)[0]
    assert group["pending"] == 0
    assert answered() < 30_000, "the worker finished the backlog: the stop was not mid-way"
    assert int(group["entries-read"]) == answered()  # every entry read was applied and answered


BUSY_SCRIPT = """
local t0 = redis.call('TIME')
local start = tonumber(t0[1]) + tonumber(t0[2]) / 1e6
while true do
  local t = redis.call('TIME')
  if tonumber(t[1]) + tonumber(t[2]) / 1e6 - start > tonumber(ARGV[1]) then return 1 end
end
"""


def test_a_second_sigterm_stops_at_once_even_while_redis_hangs(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """While Redis is busy (a 3 s script blocks it), the first SIGTERM's graceful stop has
    to wait for Redis; the second one ends the process at once, with exit code 130."""
    worker = start_worker("lending", redis_server, name="hung")
    r = redis_server.client()
    busy = threading.Thread(target=lambda: r.eval(BUSY_SCRIPT, 0, 3))
    busy.start()
    try:
        time.sleep(0.3)  # Redis is inside the script now
        worker.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert worker.process.poll() is None, "the graceful stop did not wait for Redis"
        forced = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=1.5) == 130
        assert time.monotonic() - forced < 1.5
        assert busy.is_alive(), "Redis was already free again: the test proves nothing"
    finally:
        busy.join()
    assert "forced stop" in worker.output()
    # Nothing was awaited, so the name was not released: its lock expires with its TTL.
    assert r.exists("bs:{main}:worker:lending:hung")


def test_entries_of_a_dead_worker_are_recovered(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """A worker read entries and died before applying them: under its own name they are
    re-read at start; under another worker they are claimed once idle long enough."""
    r = redis_server.client()
    r.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    with Client(redis_server.url) as client:
        first = client.submit_request("user1", ["a"], request_id="crash-1")
        r.xreadgroup("lending", "dead-1", {INBOX: ">"})
        second = client.submit_request("user2", ["b"], request_id="crash-2")
        r.xreadgroup("lending", "dead-2", {INBOX: ">"})
        start_worker("shelving", redis_server)
        start_worker("lending", redis_server, name="dead-1")  # same name: re-reads at start
        assert client.outcome(first, timeout=10).status == "accepted"
        start = time.monotonic()
        assert client.outcome(second, timeout=20).status == "accepted"  # claimed after ~2 s idle
        assert time.monotonic() - start < 15
    assert r.xpending(INBOX, "lending")["pending"] == 0


def test_an_entry_delivered_too_often_is_set_aside_and_answered(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """A valid entry that keeps failing to be applied (here: delivered 6 times to a worker
    that died each time) is dead-lettered after --max-deliveries (5), and answered."""
    r = redis_server.client()
    r.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    with Client(redis_server.url) as client:
        rid = client.submit_request("user1", ["geb"], request_id="cursed-1")
        assert admit(r) == 1
        ((_, ((entry, _),)),) = r.xreadgroup("lending", "ghost", {INBOX: ">"})
        for _ in range(5):
            r.xclaim(INBOX, "lending", "ghost", 0, [entry])  # each claim is a delivery
        start_worker("lending", redis_server)
        outcome = client.outcome(rid, timeout=20)
    assert (outcome.status, outcome.reason) == ("rejected", "too_many_deliveries")
    ((_, dead),) = r.xrange("bs:{main}:lending:dead")
    assert dead[b"reason"] == b"too_many_deliveries"
    assert int(dead[b"deliveries"]) > 5
    assert r.xpending(INBOX, "lending")["pending"] == 0
    assert not r.hexists("bs:{main}:lending:book", "geb")  # never applied


def test_each_worker_command_tells_its_version(bookstream_env: dict[str, str]) -> None:
    from importlib.metadata import version

    for service in ("lending", "shelving"):
        shown = subprocess.run(
            [worker_command(service), "--version"],
            capture_output=True, text=True, env=bookstream_env, timeout=30, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.strip() == f"bookstream-{service} {version(f'bookstream-{service}')}"


def test_a_workers_usage_mistake_is_one_line_in_the_one_format(
    bookstream_env: dict[str, str],
) -> None:
    for args, message in (
        (["--bogus"], "unrecognized arguments: --bogus (see bookstream-shelving --help)"),
        (["--batch-size", "0"], "--batch-size must be at least 1, not 0"),
    ):
        wrong = subprocess.run(
            [worker_command("shelving"), *args],
            capture_output=True, text=True, env=bookstream_env, timeout=30, check=False,
        )  # fmt: skip
        assert wrong.returncode == 2
        assert wrong.stderr == f"bookstream-shelving: error: {message}\n"
