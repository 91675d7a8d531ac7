"""Output that cannot be written (a full disk, a closed stdout) is one line and exit 74,
neither "denied" (1) nor "Redis unreachable" (3); a request or return submitted all the
same is named, with the command that shows its outcome."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable

import pytest
from bookstream.exits import EXIT_OUTPUT, EXITS, SUMMARY
from bookstream_core.keys import LibraryKeys

from tests.conftest import VENV_BIN, RedisServer, run_cli

FULL = "/dev/full"
pytestmark = pytest.mark.skipif(not os.path.exists(FULL), reason="no /dev/full")


def _close_stdout() -> None:
    os.close(1)


def to_full(env: dict[str, str], *args: str, closed: bool = False) -> tuple[int, str]:
    """Run ``bookstream ARGS`` with its stdout on /dev/full (or closed); its exit code and
    its stderr."""
    preexec: Callable[[], None] | None = _close_stdout if closed else None
    with open(FULL, "w") as full:
        done = subprocess.run(
            [str(VENV_BIN / "bookstream"), *args],
            stdout=None if closed else full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
            check=False,
            preexec_fn=preexec,
        )
    return done.returncode, done.stderr


@pytest.mark.parametrize("closed", [False, True])
def test_status_that_cannot_write_blames_the_output(
    redis_server: RedisServer, bookstream_env: dict[str, str], closed: bool
) -> None:
    code, stderr = to_full(bookstream_env, "status", "--redis", redis_server.url, closed=closed)
    assert code == EXIT_OUTPUT, stderr
    assert len(stderr.splitlines()) == 1, stderr
    why = "stdout is closed" if closed else "No space left on device"
    assert stderr.startswith(f"bookstream: error: cannot write the output: {why}")


@pytest.mark.parametrize("flags", [(), ("--json",), ("--no-wait",)])
def test_a_request_that_cannot_write_names_its_stored_outcome(
    served: RedisServer, bookstream_env: dict[str, str], flags: tuple[str, ...]
) -> None:
    code, stderr = to_full(bookstream_env, "request", "u", "geb", "--redis", served.url, *flags)
    assert code == EXIT_OUTPUT, stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert "cannot write the output: No space left on device" in stderr
    found = re.search(r"bookstream outcome (\S+) shows", stderr)
    assert found is not None, stderr
    shown = run_cli(bookstream_env, "outcome", found[1], server=served)
    assert shown.returncode == 0 and "ACCEPTED" in shown.stdout, shown


def test_a_closed_stdout_submits_nothing(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    args = ("request", "u", "geb", "--no-wait", "--redis", redis_server.url)
    code, stderr = to_full(bookstream_env, *args, closed=True)
    assert code == EXIT_OUTPUT and "nothing was done" in stderr, stderr
    assert redis_server.client().llen(LibraryKeys("main").submissions) == 0


def test_every_command_lists_the_code() -> None:
    for name, codes in {**EXITS, "(summary)": SUMMARY}.items():
        assert "could not be written" in codes[EXIT_OUTPUT], name
