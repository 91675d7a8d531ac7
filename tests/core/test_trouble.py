"""Redis misconfigured, full, emptied, or refusing a right: real worker processes never
blame an entry for it, never die of it silently, and carry on once it passes."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import redis

from tests.conftest import RedisServer, WorkerProcess, run_cli, wait_for
from tests.test_metrics import http_get

LIB = "trouble"
INBOX = f"bs:{{{LIB}}}:lending:inbox"


def _requests(r: redis.Redis, n: int, tag: str) -> list[str]:
    ids = [f"{tag}-{k}" for k in range(n)]
    for k, rid in enumerate(ids):
        event = {"v": 1, "type": "request", "id": rid, "user": f"u{k % 7}", "books": [f"b{k}"]}
        r.xadd(INBOX, {"e": json.dumps(event)})
    return ids


def _answered(r: redis.Redis, ids: list[str]) -> bool:
    return all(r.exists(f"bs:{{{LIB}}}:outcome:{rid}") for rid in ids)


def _statuses(r: redis.Redis, ids: list[str]) -> set[str]:
    return {json.loads(r.get(f"bs:{{{LIB}}}:outcome:{rid}"))["status"] for rid in ids}


def _dead(r: redis.Redis) -> int:
    return int(r.xlen(f"bs:{{{LIB}}}:lending:dead") + r.xlen(f"bs:{{{LIB}}}:shelving:dead"))


def test_a_worker_refuses_a_redis_that_evicts(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    redis_server.client().config_set("maxmemory-policy", "allkeys-lru")
    done = run_cli(bookstream_env, "serve", "--library", LIB, server=redis_server, timeout=30)
    assert done.returncode == 1
    assert "maxmemory-policy allkeys-lru" in done.stderr and "Traceback" not in done.stderr


def test_memory_pressure_is_waited_out_not_dead_lettered(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    r = redis_server.client()
    lending = start_worker("lending", redis_server, library=LIB)
    start_worker("shelving", redis_server, library=LIB)
    # Requests arrive while lending is frozen; then Redis is full: writes are refused.
    lending.process.send_signal(signal.SIGSTOP)
    ids = _requests(r, 40, "oom")
    r.config_set("maxmemory", "1")
    lending.process.send_signal(signal.SIGCONT)
    wait_for(lambda: "redis refuses the work" in lending.output(), timeout=20)
    assert not _answered(r, ids[:1])
    r.config_set("maxmemory", "0")  # room again
    wait_for(lambda: _answered(r, ids), timeout=30)
    assert _statuses(r, ids) <= {"accepted", "denied"}
    assert _dead(r) == 0
    assert "redis accepts the work again" in lending.output()
    done = run_cli(bookstream_env, "audit", "--library", LIB, server=redis_server)
    assert done.returncode == 0, done.stdout + done.stderr


def test_redis_restarted_empty_is_prepared_again(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    r = redis_server.client()
    workers = [start_worker(s, redis_server, library=LIB) for s in ("lending", "shelving")]
    first = _requests(r, 5, "before")
    wait_for(lambda: _answered(r, first), timeout=20)
    r.flushall()
    r.function_flush()  # what a restart without persistence loses: data and functions
    second = _requests(r, 5, "after")
    wait_for(lambda: _answered(r, second), timeout=30)
    assert _statuses(r, second) == {"accepted"}
    assert all(w.process.poll() is None for w in workers)
    assert "prepared again" in workers[0].output()


def test_housekeeping_that_keeps_failing_stops_the_worker(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """A worker whose user may not claim (XAUTOCLAIM refused) reports not ready, then
    exits non-zero: never a live process with a dead task."""
    r = redis_server.client()
    r.execute_command("ACL", "SETUSER", "w", "on", ">pw", "~*", "&*", "+@all", "-xautoclaim")
    url = f"unix://w:pw@{redis_server.socket}"
    lending = start_worker(
        "lending",
        redis_server,
        library=LIB,
        metrics=True,
        extra=["--redis", url],
        env={"BOOKSTREAM_GIVE_UP_S": "3"},
    )
    seen: list[int] = []

    def not_ready() -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{lending.metrics_port}/readyz", timeout=1
            ) as reply:
                seen.append(reply.status)
        except urllib.error.HTTPError as exc:
            seen.append(exc.code)
        except OSError:
            pass
        return 503 in seen

    wait_for(not_ready, timeout=10)  # /readyz reflects the failing task while it lasts
    assert lending.process.wait(timeout=30) == 1
    out = lending.output()
    assert "housekeeping failed, retrying" in out
    assert "housekeeping failed for 3 s" in out


def test_status_and_audit_report_an_evicting_redis(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    args = ("--library", LIB)
    calm = run_cli(bookstream_env, "status", *args, server=redis_server)
    assert "maxmemory-policy noeviction" in calm.stdout and "PROBLEM" not in calm.stdout
    redis_server.client().config_set("maxmemory-policy", "volatile-lru")
    status = run_cli(bookstream_env, "status", *args, server=redis_server)
    assert status.returncode == 0
    assert "PROBLEM: Redis evicts keys under memory pressure" in status.stdout
    as_json = json.loads(
        run_cli(bookstream_env, "status", "--json", *args, server=redis_server).stdout
    )
    assert as_json["redis"]["maxmemory_policy"] == "volatile-lru"
    audit = run_cli(bookstream_env, "audit", *args, server=redis_server)
    assert audit.returncode == 1
    assert "maxmemory-policy volatile-lru" in audit.stdout + audit.stderr


def test_a_client_facing_a_full_redis_says_so_in_one_line(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    start_worker("lending", redis_server, library=LIB)
    redis_server.client().config_set("maxmemory", "1")
    try:
        done = run_cli(bookstream_env, "request", "u", "b", "--library", LIB, server=redis_server)
    finally:
        redis_server.client().config_set("maxmemory", "0")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "refused" in done.stderr and "maxmemory" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_long_trouble_never_dead_letters_a_valid_entry(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    """A key of the wrong type makes every apply call refuse (BSENV) for seconds: the
    batch is kept and applied again as it is, its delivery count restored and its idle
    time reset, so neither its own retries nor another worker's claims push a valid
    entry past --max-deliveries."""
    r = redis_server.client()
    args = ["--max-deliveries", "2", "--claim-idle-ms", "2500"]
    first = start_worker("lending", redis_server, library=LIB, extra=args)
    start_worker("lending", redis_server, library=LIB, extra=args)
    start_worker("shelving", redis_server, library=LIB, extra=args)
    inflight = f"bs:{{{LIB}}}:lending:inflight"
    r.delete(inflight)
    r.set(inflight, "not a sorted set")
    ids = _requests(r, 5, "long")
    wait_for(lambda: "redis refuses the work" in first.output(), timeout=20)
    time.sleep(8)  # many retries, several claim periods
    assert not _answered(r, ids[:1]), r.get(f"bs:{{{LIB}}}:outcome:{ids[0]}")
    r.delete(inflight)  # the trouble passes
    wait_for(lambda: _answered(r, ids), timeout=30)
    assert _statuses(r, ids) == {"accepted"}
    assert _dead(r) == 0
    done = run_cli(bookstream_env, "audit", "--library", LIB, server=redis_server)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_running_worker_notices_redis_starting_to_evict(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    lending = start_worker(
        "lending", redis_server, library=LIB, metrics=True, env={"BOOKSTREAM_GIVE_UP_S": "2"}
    )
    redis_server.client().config_set("maxmemory-policy", "allkeys-lru")
    assert lending.process.wait(timeout=30) == 1
    assert "maxmemory-policy allkeys-lru" in lending.output()


def test_rolling_restarts_during_a_trouble_are_not_deliveries(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    """Breaker round 2: restarting a worker while Redis refused its batch re-read the
    batch and counted a delivery each time, until valid entries were dead-lettered."""
    r = redis_server.client()
    args = ["--max-deliveries", "2"]
    start_worker("shelving", redis_server, library=LIB)
    lending = start_worker("lending", redis_server, name="rolling", library=LIB, extra=args)
    inflight = f"bs:{{{LIB}}}:lending:inflight"
    r.set(inflight, "not a sorted set")  # every batch refused
    ids = _requests(r, 1, "roll")
    wait_for(lambda: "redis refuses the work" in lending.output(), timeout=20)
    for _ in range(3):
        assert lending.terminate() == 0
        lending = start_worker("lending", redis_server, name="rolling", library=LIB, extra=args)
        wait_for(lambda w=lending: "redis refuses the work" in w.output(), timeout=20)  # type: ignore[misc]
    r.delete(inflight)
    wait_for(lambda: _answered(r, ids), timeout=30)
    assert _statuses(r, ids) == {"accepted"}
    assert _dead(r) == 0


def test_a_stalled_inbox_keeps_its_worker_not_ready_while_its_replies_are_idle(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Each stream a worker reads has its own trouble: the idle replies loop succeeding
    must not declare the stalled inbox's trouble over (breaker: /readyz flipped back to
    200 every few seconds, and the log said "accepts the work again" each time)."""
    r = redis_server.client()
    lending = start_worker("lending", redis_server, library=LIB, metrics=True)
    inflight = f"bs:{{{LIB}}}:lending:inflight"
    r.set(inflight, "not a sorted set")
    _requests(r, 1, "stalled")
    port = lending.metrics_port
    assert port is not None
    wait_for(lambda: http_get(port, "/readyz")[0] == 503, timeout=20)
    deadline = time.monotonic() + 8  # several backoffs of the inbox, many replies reads
    while time.monotonic() < deadline:
        assert http_get(port, "/readyz")[0] == 503
        time.sleep(0.1)
    assert "redis accepts the work again" not in lending.output()
    r.delete(inflight)
    wait_for(lambda: http_get(port, "/readyz")[0] == 200, timeout=20)
    assert lending.output().count("redis accepts the work again") == 1


def test_one_user_s_damaged_key_holds_back_that_user_alone(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Breaker: a wrong-typed loans key of one user stopped every user's requests, and
    the worker said it was ready. Now that user's request waits (pending, retried with
    the claims) while the others are answered, and it is applied once the key is mended."""
    r = redis_server.client()
    args = ["--claim-idle-ms", "1000"]
    lending = start_worker("lending", redis_server, library=LIB, metrics=True, extra=args)
    start_worker("shelving", redis_server, library=LIB)
    damaged = f"bs:{{{LIB}}}:lending:loans:u0"
    r.set(damaged, "not a set")
    ids = _requests(r, 7, "one")  # users u0..u6: only the first is u0's
    wait_for(lambda: _answered(r, ids[1:]), timeout=20)
    assert not _answered(r, ids[:1])
    assert lending.metrics_port is not None
    assert http_get(lending.metrics_port, "/readyz")[0] == 200
    wait_for(lambda: damaged in lending.output(), timeout=20)  # the log names the key
    r.delete(damaged)
    wait_for(lambda: _answered(r, ids[:1]), timeout=20)
    assert _statuses(r, ids) == {"accepted"}
    assert _dead(r) == 0
