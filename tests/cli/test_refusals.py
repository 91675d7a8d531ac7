"""Redis refusing who a command runs as: one plain line, no traceback; a refused login is
said as such (Redis was reached), a missing right names the library it was needed for."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, RedisServer, run_cli


@pytest.fixture
def users(redis_server: RedisServer, bookstream_env: dict[str, str], tmp_path: Path) -> Path:
    folder = tmp_path / "users"
    done = run_cli(bookstream_env, "setup", "--acl", str(folder), server=redis_server)
    assert done.returncode == 0, done.stderr
    return folder


def as_role(folder: Path, role: str, *command: str) -> list[str]:
    return [*command, "--user", f"bs-main-{role}", "--password-file", str(folder / role)]


def one_line(stderr: str) -> str:
    assert len(stderr.splitlines()) == 1, stderr
    return stderr.strip()


def test_a_client_requesting_on_another_library_gets_one_line(
    redis_server: RedisServer, bookstream_env: dict[str, str], users: Path
) -> None:
    command = as_role(users, "client", "request", "u1", "b4", "--library", "other")
    done = run_cli(bookstream_env, *command, server=redis_server)
    assert done.returncode == 3
    line = one_line(done.stderr)  # (was followed by "Future exception was never retrieved")
    right = "no permissions to subscribe to the outcome channels of library 'other'"
    assert f"user 'bs-main-client' has {right}" in line
    assert "a role of library 'main'" in line


@pytest.mark.parametrize("command", [("status",), ("audit",), ("dead-letters", "list")])
def test_a_viewer_of_another_library_is_told_which_right_it_lacks(
    redis_server: RedisServer, bookstream_env: dict[str, str], users: Path, command: tuple[str]
) -> None:
    done = run_cli(
        bookstream_env, *as_role(users, "viewer", *command, "--library", "other"),
        server=redis_server,
    )  # fmt: skip
    assert done.returncode == 3
    line = one_line(done.stderr)
    assert "user 'bs-main-viewer' has no permissions to access the keys of library 'other'" in line
    assert "pipeline" not in line and "HVALS" not in line


def test_a_refused_login_is_not_an_unreachable_redis(
    redis_server: RedisServer, bookstream_env: dict[str, str], users: Path
) -> None:
    for user, password in (("nobody", "x"), ("bs-main-viewer", "wrong")):
        args = ("status", "--user", user, "--password", password)
        done = run_cli(bookstream_env, *args, server=redis_server)
        assert done.returncode == 3  # as the help lists: Redis refusing
        line = one_line(done.stderr)
        assert f"refused the login of user {user!r}" in line, line
        assert "cannot reach" not in line


def test_an_audit_of_a_library_nobody_used_says_so(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    done = run_cli(bookstream_env, "audit", "--library", "typo", server=redis_server)
    assert done.returncode == 0, done.stderr
    assert "note: no lending or shelving worker ever served library 'typo'" in done.stdout


def test_no_password_for_a_redis_that_wants_one_fails_at_once(
    redis_factory: Callable[..., RedisServer], bookstream_env: dict[str, str]
) -> None:
    """Breaker: redis-py's health check of a connection whose login was refused reconnected
    for ever, and `status --timeout 3` hung (past 20 s) instead of failing."""
    server = redis_factory()
    server.client().config_set("requirepass", "sekret")
    server.close_clients()
    for command in (["status"], ["request", "u", "b"], ["outcome", "r1"]):
        started = time.monotonic()
        done = run_cli(bookstream_env, *command, "--timeout", "3", server=server, timeout=30)
        assert done.returncode == 3, done
        assert time.monotonic() - started < 10, command
        assert "refused the login of the default user" in one_line(done.stderr)


def test_a_worker_given_no_password_says_so_and_stops_on_sigterm(
    redis_factory: Callable[..., RedisServer], bookstream_env: dict[str, str]
) -> None:
    """Breaker: a worker started without the password of a Redis that wants one logged
    nothing, never got ready and ignored SIGTERM (redis-py's health check reconnecting
    for ever); in a pod missing its Secret only SIGKILL ended it."""
    server = redis_factory()
    server.client().config_set("requirepass", "sekret")
    server.close_clients()
    worker = subprocess.Popen(
        [str(VENV_BIN / "bookstream-lending"), "nopw", "--redis", server.url],
        env=bookstream_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(4)
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=15)
    finally:
        worker.kill()
    assert worker.returncode == 0, output
    assert "redis unavailable at start" in output and "authenticated" in output, output
