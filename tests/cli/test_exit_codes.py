"""Each command's --help ends with the exit codes it returns, and only those: the commands
run for real (a real Redis, a real embedded home) and exit with a code their help lists,
meaning what it says there."""

from __future__ import annotations

import argparse
import re
import subprocess

import pytest
from bookstream.exits import EXITS, epilog
from bookstream.parser import build_parser

from tests.conftest import VENV_BIN, RedisServer, run_cli

#: Commands that decide no request: their help must not speak of denials.
DECIDE_NOTHING = ("status", "info", "audit", "dead-letters", "setup", "acl", "serve",
                  "embedded", "bench")  # fmt: skip


def _parsers(
    parser: argparse.ArgumentParser, name: str = ""
) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser and its actions' (``dead-letters list``), by name."""
    found = [(name, parser)] if name else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                found += _parsers(child, f"{name} {sub}".strip())
    return found


def listed(help_text: str) -> dict[int, str]:
    """The exit codes a --help lists, each with its meaning (on one line)."""
    codes: dict[int, str] = {}
    code = -1
    for line in help_text.split("\nexit codes", 1)[1].splitlines()[1:]:
        if found := re.fullmatch(r"  (\d+) +(.*)", line):
            code = int(found[1])
            codes[code] = found[2]
        elif line.startswith("      "):
            codes[code] += " " + line.strip()
    return codes


def test_every_command_lists_its_own_codes() -> None:
    parsers = _parsers(build_parser())
    assert {name for name, _ in parsers} == set(EXITS)
    for name, parser in parsers:
        assert parser.epilog == epilog(name), name
        if name.split()[0] in DECIDE_NOTHING:
            assert "denied" not in (parser.epilog or ""), name
    assert build_parser().epilog == epilog(None)


def test_an_epilog_names_only_options_its_command_takes() -> None:
    """(A command with actions, ``dead-letters``: an option of one of them.)"""
    for name, parser in _parsers(build_parser()):
        below = [parser] + [p for _, p in _parsers(parser, name)]
        options = {o for p in below for a in p._actions for o in a.option_strings}
        for option in re.findall(r"--[a-z][a-z-]*", parser.epilog or ""):
            assert option in options, f"{name}: {option}"


def _codes(env: dict[str, str], *command: str) -> dict[int, str]:
    shown = run_cli(env, *command, "--help")
    assert shown.returncode == 0, shown.stderr
    return listed(shown.stdout)


def test_status_help_speaks_of_no_denial(bookstream_env: dict[str, str]) -> None:
    shown = run_cli(bookstream_env, "status", "--help")
    assert "denied" not in shown.stdout and "rejected" not in shown.stdout
    assert set(listed(shown.stdout)) == {0, 2, 3, 74}


@pytest.mark.parametrize(
    ("command", "code", "meaning"),
    [
        (("info", "--function", "nope"), 2, "no functions library"),
        (("info", "--json", "--functions"), 2, "--json with --functions"),  # (was ignored)
        (("embedded", "status"), 3, "not running"),
    ],
)
def test_a_command_without_redis_exits_as_its_help_says(
    bookstream_env: dict[str, str], command: tuple[str, ...], code: int, meaning: str
) -> None:
    done = run_cli(bookstream_env, *command)
    assert done.returncode == code, done
    codes = _codes(bookstream_env, *command[:2] if command[0] == "embedded" else command[:1])
    assert meaning in codes[code], codes


def test_commands_on_a_real_redis_exit_as_their_help_says(
    bookstream_env: dict[str, str], redis_server: RedisServer
) -> None:
    env = bookstream_env
    # No worker: a submission waits, and nothing would answer a request.
    queued = run_cli(env, "request", "u", "geb", "--no-wait", server=redis_server)
    assert queued.returncode == 0 and "submitted" in _codes(env, "request")[0]
    waited = run_cli(env, "request", "u", "geb", "--timeout", "2", server=redis_server)
    assert waited.returncode == 3 and "no Lending worker running" in _codes(env, "request")[3]
    # The submission no worker admitted is a violation of the audit's.
    audit = run_cli(env, "audit", server=redis_server)
    assert audit.returncode == 1, audit
    assert "violation" in _codes(env, "audit")[1]
    unknown = run_cli(env, "outcome", "nobody-sent-this", server=redis_server)
    assert unknown.returncode == 2 and "unknown request id" in _codes(env, "outcome")[2]
    missing = run_cli(env, "dead-letters", "show", "1-0", server=redis_server)
    assert missing.returncode == 2, missing
    assert "no such dead letter" in _codes(env, "dead-letters", "show")[2]
    gone = run_cli(env, "status", "--redis", f"unix://{redis_server.directory}/none.sock")
    assert gone.returncode == 3 and "Redis unreachable" in _codes(env, "status")[3]


def test_submit_helps_name_every_refused_request_id(bookstream_env: dict[str, str]) -> None:
    for kind in ("request", "return"):
        meaning = _codes(bookstream_env, kind)[2]
        assert "a request id already used for other books, by another user or for the other " \
            "kind" in meaning, meaning  # fmt: skip


def test_embedded_help_names_the_default_home_as_the_others_do(
    bookstream_env: dict[str, str],
) -> None:
    shown = " ".join(run_cli(bookstream_env, "embedded", "--help").stdout.split())
    assert "default $XDG_STATE_HOME/bookstream, else ~/.local/state/bookstream" in shown


@pytest.mark.parametrize("service", ["lending", "shelving"])
def test_worker_programs_end_their_help_with_their_codes(
    bookstream_env: dict[str, str], service: str
) -> None:
    shown = subprocess.run(
        [str(VENV_BIN / f"bookstream-{service}"), "--help"],
        capture_output=True, text=True, env=bookstream_env, timeout=30, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    codes = listed(shown.stdout)
    assert set(codes) == {0, 1, 2, 130}, codes
    serve = _codes(bookstream_env, "serve")
    assert all(codes[code] == serve[code] for code in (0, 1, 130)), (codes, serve)
    assert "stopped by a signal" in codes[0] and "bad" in codes[2]
    if service == "shelving":
        # Lending's words misled: Shelving logs no outcome and keeps none.
        options = shown.stdout.split("\n  --log-level", 1)[1].split("exit codes:", 1)[0]
        assert "Lending" not in options and "outcome" not in options, options
