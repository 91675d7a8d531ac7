"""The embedded Redis trusts only what it made as the current user: real files, real
processes, the real ``bookstream`` command."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import VENV_BIN, RedisServer, run_cli, wait_for

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="making another user's files needs root")


@pytest.fixture
def env(bookstream_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``bookstream_env``; whatever embedded Redis a test leaves is shut down after it,
    through its socket (the test may have forged the pid file on purpose)."""
    yield bookstream_env
    sock = Path(bookstream_env["BOOKSTREAM_HOME"]) / "redis.sock"
    if sock.is_socket() and not sock.is_symlink() and sock.stat().st_uid == os.geteuid():
        try:
            with redis.Redis(unix_socket_path=str(sock), socket_timeout=2) as r:
                pid = int(r.info("server")["process_id"])
        except (redis.RedisError, OSError):
            return
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists())


def _home(env: dict[str, str]) -> Path:
    return Path(env["BOOKSTREAM_HOME"])


def _refused(result: subprocess.CompletedProcess[str], path: Path, why: str) -> None:
    assert result.returncode == 3, result
    assert result.stderr.startswith("bookstream: error: not trusting the embedded Redis")
    assert f"{path} {why}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live process of the same user."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_pid_file_naming_another_process_is_reported_and_never_signalled(
    env: dict[str, str], sleeper: subprocess.Popen[bytes]
) -> None:
    assert run_cli(env, "embedded", "start").returncode == 0
    pidfile = _home(env) / "redis.pid"
    real = pidfile.read_text()
    pidfile.write_text(f"{sleeper.pid}\n")
    # Running: stop, and every other use, refuse; the server is not touched either.
    stop = run_cli(env, "embedded", "stop")
    _refused(stop, pidfile, f"names process {sleeper.pid}, but the Redis on its socket")
    _refused(run_cli(env, "request", "u", "geb", "--no-wait"), pidfile, "names process")
    assert sleeper.poll() is None
    # Not running: the pid file is stale, its number now another process's.
    pidfile.write_text(real)
    assert run_cli(env, "embedded", "stop").stdout.strip() == "stopped"
    pidfile.write_text(f"{sleeper.pid}\n")
    stale = run_cli(env, "embedded", "stop")
    assert stale.returncode == 3
    assert f"{pidfile} names process {sleeper.pid}, which is not it: left alone" in stale.stderr
    assert sleeper.poll() is None
    # start refuses it as stop does (it started a server that overwrote the file), and
    # once the stale file is removed starts anew.
    for start in (run_cli(env, "embedded", "start"), run_cli(env, "status")):
        assert start.returncode == 3, start
        assert start.stderr == f"{stale.stderr}", start.stderr
    assert pidfile.read_text() == f"{sleeper.pid}\n"
    pidfile.unlink()
    assert run_cli(env, "embedded", "start").returncode == 0
    assert pidfile.read_text().strip() != str(sleeper.pid)
    assert run_cli(env, "embedded", "stop").stdout.strip() == "stopped"
    assert sleeper.poll() is None


def test_a_server_that_lost_its_socket_is_not_doubled_and_stop_finds_it(
    env: dict[str, str],
) -> None:
    assert run_cli(env, "embedded", "start").returncode == 0
    pid = int((_home(env) / "redis.pid").read_text())
    (_home(env) / "redis.sock").unlink()
    # A second server on the same AOF files would corrupt them: refused.
    again = run_cli(env, "request", "u", "geb", "--no-wait")
    assert again.returncode == 3 and f"(pid {pid}) runs but does not answer" in again.stderr
    # /proc shows it is the redis-server started here: stop may signal it.
    assert run_cli(env, "embedded", "stop").stdout.strip() == "stopped"
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in _state(pid))


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "Z"


def test_a_symlinked_socket_is_refused(env: dict[str, str], redis_server: RedisServer) -> None:
    """Someone else's Redis behind a link would receive the library's requests."""
    home = _home(env)
    home.mkdir(mode=0o700)
    (home / "redis.sock").symlink_to(redis_server.socket)
    for args in (["request", "u", "geb", "--no-wait"], ["embedded", "status"]):
        _refused(run_cli(env, *args), home / "redis.sock", "is a symlink")
    assert redis_server.client().dbsize() == 0  # nothing reached the linked Redis


def test_a_symlinked_pid_file_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    """redis-server writes its pid file through a link: it would overwrite the target."""
    home = _home(env)
    home.mkdir(mode=0o700)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    (home / "redis.pid").symlink_to(victim)
    _refused(run_cli(env, "embedded", "start"), home / "redis.pid", "is a symlink")
    _refused(run_cli(env, "embedded", "stop"), home / "redis.pid", "is a symlink")
    assert victim.read_text() == "keep me\n"
    assert not (home / "redis.sock").exists()


def _unusable(result: subprocess.CompletedProcess[str], what: str) -> None:
    """The directory itself is no directory of the user's: the setting's mistake (exit 2)."""
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"bookstream: error: BOOKSTREAM_HOME: {what}; "), result
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_home_that_is_a_file_is_the_settings_mistake(env: dict[str, str]) -> None:
    """Not Redis unreachable (exit 3): the user named a file, and every command says so."""
    _home(env).write_text("mine\n")
    commands = [["status"], ["request", "u", "geb", "--no-wait"], ["demo"],
                ["embedded", "start"], ["embedded", "status"], ["embedded", "stop"]]  # fmt: skip
    for command in commands:
        _unusable(run_cli(env, *command), f"{_home(env)} is not a directory")
    # The workers too: `serve` and a worker program, each under its own name.
    for program in (["bookstream", "serve"], ["bookstream-lending"]):
        argv = [str(VENV_BIN / program[0]), *program[1:]]
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result
        assert f"BOOKSTREAM_HOME: {_home(env)} is not a directory" in result.stderr, result
        assert len(result.stderr.strip().splitlines()) == 1, result
    under = {**env, "BOOKSTREAM_HOME": str(_home(env) / "deeper" / "home")}
    _unusable(run_cli(under, "outcome", "r1"), f"{_home(env)} is not a directory")
    assert _home(env).read_text() == "mine\n"
    shown = " ".join(run_cli(env, "embedded", "status", "--help").stdout.split())
    assert "2 bad input" in shown and "BOOKSTREAM_HOME relative, no directory of yours" in shown


#: Without these rights root is held to files' modes as any user is.
DAC = "-dac_override,-dac_read_search,-fowner"
SETPRIV = [shutil.which("setpriv") or "setpriv", "--bounding-set", DAC, "--inh-caps", DAC]


def _can_drop_rights() -> bool:
    try:
        return subprocess.run([*SETPRIV, "true"], check=False).returncode == 0
    except OSError:
        return False


@as_root
@pytest.mark.skipif(not _can_drop_rights(), reason="setpriv cannot drop root's file rights")
def test_a_home_one_may_not_write_in_or_open_is_the_settings_mistake(
    env: dict[str, str], tmp_path: Path
) -> None:
    def run(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        argv = [*SETPRIV, str(VENV_BIN / "bookstream"), *args]
        return subprocess.run(argv, capture_output=True, text=True, env=environment,
                              timeout=60, check=False)  # fmt: skip

    home = _home(env)
    home.mkdir(mode=0o500)
    _unusable(run(env, "status"), f"cannot write in {home}: Permission denied")
    home.chmod(0o000)
    _unusable(run(env, "embedded", "start"), f"cannot open {home}: Permission denied")
    shut = tmp_path / "shut"
    shut.mkdir(mode=0o500)
    inside = {**env, "BOOKSTREAM_HOME": str(shut / "home")}
    _unusable(
        run(inside, "request", "u", "geb"), f"cannot create {shut / 'home'}: Permission denied"
    )
    assert list(shut.iterdir()) == [] and list(home.iterdir()) == []


def test_a_symlinked_directory_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    _home(env).symlink_to(elsewhere)
    _unusable(run_cli(env, "embedded", "start"), f"{_home(env)} is a symlink")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("mode", "narrowed"),
    [(0o755, 0o700), (0o777, 0o700), (0o2775, 0o2700)],
    ids=["0755", "0777", "setgid-2775"],
)
def test_a_lax_directory_of_ones_own_is_narrowed_to_0700(
    env: dict[str, str], mode: int, narrowed: int
) -> None:
    """A plain mkdir (umask 022 or 002) is narrowed once nothing foreign is found in it
    (next test); only group's and others' bits go (setgid stays: it was lost)."""
    home = _home(env)
    home.mkdir()
    os.chmod(home, mode)
    assert run_cli(env, "embedded", "start").returncode == 0
    assert stat.S_IMODE(home.stat().st_mode) == narrowed
    assert run_cli(env, "embedded", "stop").stdout.strip() == "stopped"


@as_root
def test_another_users_socket_file_or_directory_is_refused(env: dict[str, str]) -> None:
    home = _home(env)
    home.mkdir()
    os.chmod(home, 0o777)  # lax: another user could put a socket of theirs in it
    with socket.socket(socket.AF_UNIX) as planted:
        planted.bind(str(home / "redis.sock"))
        planted.listen()
        os.chown(home / "redis.sock", NOBODY, NOBODY)
        _refused(
            run_cli(env, "request", "u", "geb", "--no-wait"),
            home / "redis.sock",
            f"belongs to uid {NOBODY}, not you",
        )
    assert (home / "redis.sock").is_socket()  # refused, not removed
    assert stat.S_IMODE(home.stat().st_mode) == 0o777  # nor narrowed: it was, then refused
    (home / "redis.sock").unlink()
    (home / "redis.log").write_text("")
    os.chown(home / "redis.log", NOBODY, NOBODY)
    _refused(run_cli(env, "embedded", "start"), home / "redis.log", f"belongs to uid {NOBODY}")
    (home / "redis.log").unlink()
    os.chown(home, NOBODY, NOBODY)
    _unusable(run_cli(env, "embedded", "start"), f"{home} belongs to uid {NOBODY}, not you")
    assert not (home / "redis.sock").exists()


@pytest.mark.parametrize("program", ["redis-cli", "redis-server"])
def test_stop_signals_no_other_redis_program_run_there(
    env: dict[str, str], redis_server: RedisServer, program: str
) -> None:
    """Any executable with "redis" in its name, run from the directory, passed for the
    embedded Redis: a redis-cli subscribed elsewhere was killed by stop, and so was a
    redis-server of another socket whose --dir is this directory."""
    home = _home(env)
    home.mkdir(mode=0o700)
    if program == "redis-cli":
        argv = ["redis-cli", "-s", str(redis_server.socket), "subscribe", "news"]
    else:
        elsewhere = redis_server.directory / "other.sock"
        argv = ["redis-server", "--port", "0", "--unixsocket", str(elsewhere), "--dir",
                str(home), "--save", "", "--appendonly", "no"]  # fmt: skip
    other = subprocess.Popen(argv, cwd=home, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.readlink(f"/proc/{other.pid}/cwd") == str(home))
        if program == "redis-cli":
            wait_for(lambda: redis_server.client().pubsub_numsub("news")[0][1] == 1)
        (home / "redis.pid").write_text(f"{other.pid}\n")
        stop = run_cli(env, "embedded", "stop")
        assert stop.returncode == 3, stop
        assert f"names process {other.pid}, which is not it: left alone" in stop.stderr
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
