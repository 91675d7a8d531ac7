"""``bookstream demo`` / ``make demo`` and the embedded Redis, in a private state directory."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import redis

from tests.conftest import RedisServer, run_cli

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = [
    # Every command it prints can be pasted as is: it names the demo's library.
    "$ bookstream request --library demo user1 alice-in-wonderland geb invisible-cities",
    "$ bookstream return --library demo user1 invisible-cities",
    "$ bookstream audit --library demo",
    "lent:         'alice-in-wonderland', 'geb', 'invisible-cities'",
    "returned:     'invisible-cities'",
    "lent:         'invisible-cities', 'selfish-gene'",
    "unavailable:  'geb' (lent to another user)",
    # The line `bookstream audit` prints, in full.
    "audit of library demo: OK (4 books lent to 2 users, 0 in storage, 3 outcomes replayed)",
]


def test_demo_runs_the_original_scenario_and_is_repeatable(bookstream_env: dict[str, str]) -> None:
    home = Path(bookstream_env["BOOKSTREAM_HOME"])
    for _ in range(2):
        result = run_cli(bookstream_env, "demo")
        assert result.returncode == 0, result.stdout + result.stderr
        for line in EXPECTED:
            assert line in result.stdout
    # It stopped the embedded Redis it started.
    assert not (home / "redis.sock").exists()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_make_demo_exits_0(bookstream_env: dict[str, str]) -> None:
    result = subprocess.run(
        ["make", "-s", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=bookstream_env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit of library demo: OK (" in result.stdout


def test_embedded_redis_is_private_and_reused(bookstream_env: dict[str, str]) -> None:
    home = Path(bookstream_env["BOOKSTREAM_HOME"])
    assert run_cli(bookstream_env, "embedded", "status").returncode == 3
    try:
        # A command with no Redis named starts it...
        submitted = run_cli(bookstream_env, "request", "u1", "geb", "--no-wait")
        assert submitted.returncode == 0, submitted.stderr
        status = run_cli(bookstream_env, "embedded", "status", "--json")
        assert status.returncode == 0 and '"running": true' in status.stdout
        assert run_cli(bookstream_env, "embedded", "status").stdout.startswith(
            "embedded Redis running at unix://"
        )
        with redis.Redis(unix_socket_path=str(home / "redis.sock")) as r:
            assert r.config_get("port")["port"] == "0"  # no TCP listener
            assert r.config_get("appendonly")["appendonly"] == "yes"
            pid = r.info("server")["process_id"]
            # ...and the next one reuses it.
            run_cli(bookstream_env, "request", "u1", "alice", "--no-wait")
            assert r.info("server")["process_id"] == pid
            assert r.llen("bs:{main}:lending:submissions") == 2
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
    finally:
        assert run_cli(bookstream_env, "embedded", "stop").stdout.strip() in (
            "stopped",
            "not running",
        )
    assert run_cli(bookstream_env, "embedded", "status").returncode == 3


def test_missing_redis_server_says_how_to_install_it(
    bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**bookstream_env, "PATH": str(tmp_path)}  # no redis-server anywhere on PATH
    result = run_cli(env, "request", "u1", "geb")
    assert result.returncode == 3
    assert "redis-server is not installed" in result.stderr
    assert "apt-get install redis-server" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.environ.get("PATH")  # the test's own PATH is untouched


def test_embedded_appendfsync_always(bookstream_env: dict[str, str]) -> None:
    env = {**bookstream_env, "BOOKSTREAM_APPENDFSYNC": "always"}
    home = Path(env["BOOKSTREAM_HOME"])
    try:
        assert run_cli(env, "embedded", "start").returncode == 0
        with redis.Redis(unix_socket_path=str(home / "redis.sock")) as r:
            assert r.config_get("appendfsync")["appendfsync"] == "always"
    finally:
        run_cli(env, "embedded", "stop")
    bad = run_cli({**env, "BOOKSTREAM_APPENDFSYNC": "never"}, "embedded", "start")
    assert bad.returncode == 2 and "BOOKSTREAM_APPENDFSYNC" in bad.stderr


def test_the_demo_ignores_a_stray_redis_variable(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    """Newcomer: an exported BOOKSTREAM_REDIS_URL made the demo empty `demo` on that Redis."""
    r = redis_server.client()
    r.set("bs:{demo}:precious", "1")
    env = {**bookstream_env, "BOOKSTREAM_REDIS_URL": redis_server.url}
    done = run_cli(env, "demo", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert r.get("bs:{demo}:precious") == b"1"
    run_cli(bookstream_env, "embedded", "stop")
