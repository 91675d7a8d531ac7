"""``bookstream bench``: a correctness smoke test (no timing assertions) and the workload."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bookstream.bench.latency import percentiles
from bookstream.bench.workload import generate

from tests.conftest import VENV_BIN, RedisServer

KEYS = {
    "events",
    "workers",
    "seconds",
    "events_per_s",
    "latency_ms",
    "audit_ok",
    "redis_version",
    "cores",
    "memory",
    "cpu",
    "worker_rss_bytes",
}


def bench(server: RedisServer, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "bookstream"), "bench", *args, "--json", "--redis", server.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


def test_drain_is_correct_and_reports_every_figure(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    done = bench(redis_server, bookstream_env, "--events", "2000", "--workers", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) >= KEYS
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "p999", "max"}
    assert result["events"] == 2000
    assert result["workers"] == 1
    assert result["audit_ok"] is True
    assert result["correct"] is True
    assert result["outcomes"] == 2000
    assert result["events_per_s"] > 0
    # the workers were stopped: no bench worker holds its name any more
    assert not redis_server.client().keys("bs:{bench}:worker:*")


def test_reference_runs_the_shipped_script_through_redis_benchmark(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    """The reference calls bs1_lending_apply with the arguments the workers send: a
    change of the script's argument layout fails here (run_reference checks that the
    calls applied), not only in a benchmark run."""
    done = bench(redis_server, bookstream_env, "--events", "500", "--workers", "2", "--reference")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["reference_ops_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["events_per_s"] / result["reference_ops_per_s"], rel=0.01
    )
    assert result["workers"] == 2 and result["correct"] is True


def test_latency_mode_measures_every_request(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    done = bench(
        redis_server, bookstream_env, "--mode", "latency", "--rate", "500", "--duration", "1"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["events"] == 500
    assert result["outcomes_received"] == 500
    assert result["audit_ok"] is True
    assert result["latency_ms"]["p50"] is not None
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["max"]


def test_workload_is_seeded_and_shaped() -> None:
    events = generate(5000, seed=7)
    assert events == generate(5000, seed=7)
    assert events != generate(5000, seed=8)
    assert len({e.request_id for e in events}) == 5000
    returns = sum(e.kind == "return" for e in events) / len(events)
    assert 0.25 < returns < 0.35
    asked: dict[str, set[str]] = {}
    for event in events:
        body = json.loads(event.payload)
        assert 1 <= len(body["books"]) <= 3
        if body["type"] == "request":
            asked.setdefault(body["user"], set()).update(body["books"])
        else:  # a return names books the same user asked for earlier
            assert set(body["books"]) <= asked[body["user"]]


def test_percentiles_nearest_rank() -> None:
    values = [float(v) for v in range(1, 1001)]
    assert percentiles(values) == {
        "p50": 500.0,
        "p90": 900.0,
        "p99": 990.0,
        "p999": 999.0,
        "max": 1000.0,
    }
    assert percentiles([])["p99"] is None


def test_the_workers_settings_are_the_table_s_rows(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    """--batch-size, --in-flight and --retention are the workers' own settings: the same
    variable, the same checks; the result records what the workers ran with."""
    shown = subprocess.run(
        [str(VENV_BIN / "bookstream"), "bench", "--help"], capture_output=True, text=True
    ).stdout
    for variable in ("BOOKSTREAM_BATCH_SIZE", "BOOKSTREAM_IN_FLIGHT", "BOOKSTREAM_RETENTION_S"):
        assert variable in shown
    bad = bench(redis_server, bookstream_env, "--batch-size", "0")
    assert bad.returncode == 2 and "--batch-size must be at least 1, not 0" in bad.stderr
    env = {**bookstream_env, "BOOKSTREAM_IN_FLIGHT": "x"}
    bad = bench(redis_server, env)
    assert bad.returncode == 2 and "BOOKSTREAM_IN_FLIGHT must be a whole number" in bad.stderr
    env = {**bookstream_env, "BOOKSTREAM_RETENTION_S": "3600"}
    done = bench(redis_server, env, "--events", "500", "--in-flight", "2")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["worker_retention_s"] == 3600
    assert (result["worker_in_flight"], result["worker_batch_size"]) == (2, 200)
    assert result["correct"] is True


def test_a_failed_run_and_a_bad_out_are_error_lines(
    redis_server: RedisServer, bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**bookstream_env, "BOOKSTREAM_GIVE_UP_S": "0"}  # every worker refuses to start
    failed = bench(redis_server, env, "--events", "100")
    assert failed.returncode == 1
    # Whichever worker the run notices first (they start together).
    assert re.match(r"bookstream: error: bench-(lending|shelving)-1 exited at start", failed.stderr)
    assert "BOOKSTREAM_GIVE_UP_S must be at least 1" in failed.stderr  # the worker's own line
    assert "Traceback" not in failed.stderr
    nowhere = bench(redis_server, bookstream_env, "--out", str(tmp_path / "no" / "r.json"))
    assert nowhere.returncode == 2
    assert nowhere.stderr == f"bookstream: error: --out: no folder {tmp_path / 'no'}\n"


class CommandLines:
    """Every process's command line, read from /proc again and again while a run goes on:
    those that hold ``secret`` (but those ending in ``exempt``), and whether the workers
    were seen."""

    def __init__(self, secret: str, exempt: bytes | None = None) -> None:
        self.secret, self.exempt = secret.encode(), exempt
        self.showing: set[bytes] = set()
        self.workers_seen = False
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        while not self.done.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                self.workers_seen |= b"bench-lending-1" in cmdline
                if self.secret in cmdline and not (self.exempt and cmdline.endswith(self.exempt)):
                    self.showing.add(cmdline)
            time.sleep(0.002)


def watched_bench(
    argv: list[str], env: dict[str, str], secret: str, bench_may_show: bool = False
) -> tuple[subprocess.CompletedProcess[str], CommandLines]:
    command = [str(VENV_BIN / "bookstream"), "bench", "--json", "--events", "2000", *argv]
    # The user wrote the password on bench's own command line: only its children count
    # (bench's, its interpreter's, and a child's between fork and exec show bench's own).
    own = ("\0".join(command) + "\0").encode()
    watch = CommandLines(secret, exempt=own if bench_may_show else None)
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    watch.thread.start()
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        watch.done.set()
        watch.thread.join()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), watch


def test_no_process_shows_the_password_during_a_run(
    redis_factory: Callable[..., RedisServer], bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    """Workers got --redis redis://:PW@..., redis-benchmark -a PW: any user's ps showed it.
    Bench takes every command's connection options now and gives the workers the
    connection as variables."""
    secret = "bench-pw-" + secrets.token_hex(8)
    server = redis_factory(tcp=True)
    server.client().config_set("requirepass", secret)
    password_file = tmp_path / "pw"
    password_file.write_text(secret + "\n")
    password_file.chmod(0o600)
    runs = [
        (["--redis", server.url, "--password-file", str(password_file)], bookstream_env, False),
        (["--redis", server.url], {**bookstream_env, "BOOKSTREAM_REDIS_PASSWORD": secret}, False),
        (["--redis", f"redis://:{secret}@127.0.0.1:{server.port}"], bookstream_env, True),
    ]
    for argv, env, bench_may_show in runs:
        done, watch = watched_bench(argv, env, secret, bench_may_show)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["correct"] is True
        assert secret not in done.stdout + done.stderr
        assert watch.workers_seen, "the watch never saw a worker: it proved nothing"
        assert watch.showing == set(), (argv, watch.showing)
    # redis-benchmark takes a password only as an argument: refused, before anything runs.
    refused = bench(server, bookstream_env, "--password-file", str(password_file), "--reference")
    assert refused.returncode == 2
    assert refused.stderr.startswith("bookstream: error: --reference runs redis-benchmark")
    assert len(refused.stderr.splitlines()) == 1
    # The private server has no password: an option for it is a mistake.
    private = subprocess.run(
        [str(VENV_BIN / "bookstream"), "bench", "--password-file", str(password_file)],
        capture_output=True, text=True, env=bookstream_env, timeout=60, check=False,
    )  # fmt: skip
    assert (private.returncode, private.stderr) == (
        2,
        "bookstream: error: --password-file is for the Redis --redis names; the private one "
        "needs none\n",
    )
