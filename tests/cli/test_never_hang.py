"""The CLI never hangs and never traces: a Redis that accepts connections but never
answers, a closed stdout, an id nobody submitted, the help of every command."""

from __future__ import annotations

import argparse
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from bookstream.parser import build_parser

from tests.conftest import VENV_BIN, RedisServer, run_cli


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A TCP server that accepts every connection and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize(
    "args",
    [
        ["request", "u1", "geb"],
        ["request", "u1", "geb", "--no-wait"],
        ["outcome", "some-id"],
        ["status"],
        ["status", "--book", "geb"],
        ["audit"],
        ["dead-letters", "list"],
    ],
)
def test_a_silent_redis_is_unreachable_within_the_timeout(
    silent_redis: str, bookstream_env: dict[str, str], args: list[str]
) -> None:
    started = time.monotonic()
    result = run_cli(bookstream_env, *args, "--timeout", "1", "--redis", silent_redis, timeout=30)
    assert time.monotonic() - started < 6, "the command hung past its --timeout"
    assert result.returncode == 3, result
    assert "cannot reach Redis" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_closed_stdout_is_a_quiet_exit(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    proc = subprocess.Popen(
        [str(VENV_BIN / "bookstream"), "status", "--redis", redis_server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=bookstream_env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # nobody will read: every write fails with EPIPE
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=30)
    assert err == ""
    assert proc.returncode == 141


def test_the_outcome_of_an_unknown_id_says_so_at_once(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    started = time.monotonic()
    result = run_cli(bookstream_env, "outcome", "nobody-sent-this", server=redis_server)
    assert time.monotonic() - started < 5
    assert result.returncode == 2
    assert "unknown request id 'nobody-sent-this'" in result.stderr
    # An id still waiting in the inbox is known: its outcome is waited for.
    queued = run_cli(bookstream_env, "request", "u", "geb", "--no-wait", server=redis_server)
    waited = run_cli(
        bookstream_env, "outcome", queued.stdout.strip(), "--timeout", "0.5", server=redis_server
    )
    assert waited.returncode == 3 and "no outcome for request" in waited.stderr


def test_a_bad_variable_is_named_as_the_variable(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    env = {**bookstream_env, "BOOKSTREAM_REDIS_DB": "abc"}
    result = run_cli(env, "status", server=redis_server)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "bookstream: error: BOOKSTREAM_REDIS_DB must be a whole number, not 'abc'"
    )


def test_version(bookstream_env: dict[str, str]) -> None:
    result = run_cli(bookstream_env, "--version")
    assert result.returncode == 0 and result.stdout.startswith("bookstream 0.")


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{parser.prog} {choice.dest} has no help"
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_subcommand_and_option_has_help() -> None:
    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 15
    for parser in parsers:
        assert parser.description, f"{parser.prog} has no description"
        for action in parser._actions:
            assert action.help, f"{parser.prog} {action.option_strings or action.dest}: no help"


def test_a_nested_command_prints_its_own_help(bookstream_env: dict[str, str]) -> None:
    result = run_cli(bookstream_env, "dead-letters", "list", "--help")
    assert result.stdout.startswith("usage: bookstream dead-letters list")
    assert "--count" in result.stdout


def test_each_worker_lists_only_its_own_options() -> None:
    shelving = subprocess.run(
        [str(VENV_BIN / "bookstream-shelving"), "--help"], capture_output=True, text=True
    )
    lending = subprocess.run(
        [str(VENV_BIN / "bookstream-lending"), "--help"], capture_output=True, text=True
    )
    assert "--user-limit" in lending.stdout and "--storage-capacity" in lending.stdout
    assert "--user-limit" not in shelving.stdout
    assert "--storage-capacity" not in shelving.stdout
    assert "--batch-size" in shelving.stdout


def test_the_demo_on_a_silent_redis_ends_with_one_line(
    silent_redis: str, bookstream_env: dict[str, str]
) -> None:
    started = time.monotonic()
    result = run_cli(bookstream_env, "demo", "--redis", silent_redis, timeout=60)
    assert time.monotonic() - started < 40
    assert result.returncode == 3, result
    assert result.stderr.startswith("bookstream: error: cannot reach Redis")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
