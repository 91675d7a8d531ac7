"""Mistakes at the edge: exit code 2, one clear line, no traceback, nothing submitted."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.conftest import VENV_BIN, RedisServer, WorkerProcess, run_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["request", "user1"], "the following arguments are required"),
        (["request", "", "geb"], "user id must not be empty"),
        (["request", "user1", ""], "book id must not be empty"),
        (["request", "user1", "x" * 201], "at most 200"),
        (["request", "user1", "bad\x07book"], "control character"),
        (["request", "user1", "ok", "line\nbreak"], "control character"),
        (["request", "user1", *[f"b{i}" for i in range(33)]], "at most 32 per request"),
        (["request", "user1", "geb", "--request-id", "has space"], "request id"),
        (["request", "user1", "geb", "--bogus"], "unrecognized arguments: --bogus"),
        (["return", "user1", "geb", "--timeout", "0"], "--timeout must be a positive number"),
        (["return", "user1", "geb", "--timeout", "nan"], "--timeout must be a positive number"),
        (["request", "user1", "geb", "--library", ""], "invalid library name"),
        (["request", "user1", "geb", "-a", "localhost:99999"], "invalid port"),
        (["request", "user1", "geb", "--redis", "redis://h:70000"], "invalid port"),
        (["dead-letters", "list", "--count", "-1"], "must be at least 1"),
        (["dead-letters", "show", "not-an-id"], "is not a dead-letter entry id"),
        (["dead-letters", "purge", "1-0", "x"], "is not a dead-letter entry id"),
        (["request", "user1", "geb", "--library", "a{b}"], "invalid library name"),
        (["request", "user1", "geb", "--redis", "http://x"], "unsupported Redis URL scheme"),
        (["request", "user1", "geb", "--db", "x"], "--db must be a whole number"),
        (["request", "user1", "geb", "--db", "99999"], "no database 99999"),
        (["status", "--db", "99999"], "no database 99999"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    redis_server: RedisServer, bookstream_env: dict[str, str], args: list[str], message: str
) -> None:
    if "--redis" not in args and "-a" not in args:
        args = [*args, "--redis", redis_server.url] if args[0] != "frobnicate" else args
    result = run_cli(bookstream_env, *args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert result.stderr.startswith("bookstream: error: ")  # parser's or command's: one format
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert redis_server.client().xlen("bs:{main}:lending:inbox") == 0


def test_unreachable_redis_exits_3(bookstream_env: dict[str, str], tmp_path: object) -> None:
    result = run_cli(
        bookstream_env, "request", "user1", "geb", "--redis", "unix:///nonexistent/redis.sock"
    )
    assert result.returncode == 3
    assert result.stderr.startswith("bookstream: error: cannot reach Redis")
    assert "Traceback" not in result.stderr


def test_no_lending_worker_exits_3_at_once(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    started = time.monotonic()
    result = run_cli(bookstream_env, "request", "user1", "geb", "--redis", redis_server.url)
    assert time.monotonic() - started < 5  # not the 10 s default timeout
    assert result.returncode == 3
    assert result.stderr.startswith("bookstream: error: no Lending worker is running")
    assert "bookstream serve" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert redis_server.client().xlen("bs:{main}:lending:inbox") == 0  # nothing submitted


def test_no_outcome_in_time_exits_3(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker("lending", redis_server)  # no Shelving: a book on the shelves never comes
    result = run_cli(
        bookstream_env, "request", "user1", "geb", "--timeout", "0.5", "--redis", redis_server.url
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("bookstream: error: no outcome for request ")
    # The request was submitted and will be applied when a Shelving worker runs.
    request_id = result.stderr.split("no outcome for request ", 1)[1].split()[0].strip("'")
    assert redis_server.client().exists("bs:{main}:lending:req:" + request_id)


def test_no_wait_prints_the_request_id(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    result = run_cli(
        bookstream_env,
        "request",
        "user1",
        "geb",
        "--no-wait",
        "--request-id",
        "my-id-1",
        "--redis",
        redis_server.url,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "my-id-1")


def test_help_documents_exit_codes(bookstream_env: dict[str, str]) -> None:
    result = run_cli(bookstream_env, "request", "--help")
    assert result.returncode == 0
    for line in ("0   accepted", "1   denied", "2   bad input", "3   no outcome in time"):
        assert line in result.stdout


def test_info_json_names_streams_and_schema(bookstream_env: dict[str, str]) -> None:
    import json

    result = run_cli(bookstream_env, "info", "--json", "--library", "lib1")
    data = json.loads(result.stdout)
    assert data["schema_version"] == 1
    assert data["streams"]["lending"] == {
        "inbox": "bs:{lib1}:lending:inbox",
        "replies": "bs:{lib1}:lending:replies",
        "group": "lending",
        "dead_letters": "bs:{lib1}:lending:dead",
    }
    submit = data["producer"]["submit"]
    assert submit.startswith("FCALL bs1_submit 1 bs:{lib1}:lending:submissions ")


def test_ids_that_are_not_utf8_are_one_line(bookstream_env: dict[str, str]) -> None:
    """Breaker: bytes that are not UTF-8 in an id traced (UnicodeEncodeError)."""
    import os
    import subprocess

    for argv in (["request", "u", "b\udcff"], ["status", "--book", "\udcff\udcfe"]):
        done = subprocess.run(
            [str(VENV_BIN / "bookstream"), *[os.fsencode(a) for a in argv]],
            capture_output=True, text=True, env=bookstream_env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "not valid UTF-8" in done.stderr and "Traceback" not in done.stderr


def test_the_ask_again_hint_names_the_library(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    queued = run_cli(
        bookstream_env, "request", "u", "b", "--no-wait", "--request-id", "later-1",
        "--library", "fresh1", server=redis_server,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    waited = run_cli(
        bookstream_env, "outcome", "later-1", "--library", "fresh1", "--timeout", "1",
        server=redis_server,
    )  # fmt: skip
    assert waited.returncode == 3
    assert "bookstream outcome later-1 --library fresh1" in waited.stderr


def test_an_empty_borrower_is_refused(bookstream_env: dict[str, str]) -> None:
    """Newcomer: `status --borrower ""` printed the whole library's status, exit 0."""
    done = run_cli(bookstream_env, "status", "--borrower", "")
    assert done.returncode == 2
    assert done.stderr == "bookstream: error: --borrower: the user id must not be empty\n"


@pytest.mark.parametrize("books", ["geb", b"geb"])
def test_one_string_of_books_is_refused_not_split_into_letters(
    redis_server: RedisServer, books: object
) -> None:
    """Newcomer: client.request("user1", "geb") lent the books g, e and b."""
    from bookstream import BadInput, Client

    with Client(redis_server.url) as client, pytest.raises(BadInput, match="not one string"):
        client.submit_request("user1", books)  # type: ignore[arg-type]
    assert not redis_server.client().exists("bs:{main}:lending:submissions")


def test_a_usage_mistake_names_the_help_to_read(bookstream_env: dict[str, str]) -> None:
    """Newcomer: an unknown option of a command pointed at `bookstream --help`, which does
    not list it; an option before the command was an "invalid choice" of command."""
    cases = {
        ("status", "--bogus"): "(see bookstream status --help)",
        ("dead-letters", "list", "--nope"): "(see bookstream dead-letters list --help)",
        ("--redis", "unix:///x.sock", "status"): "options go after the command",
    }
    for argv, expected in cases.items():
        done = run_cli(bookstream_env, *argv)
        assert done.returncode == 2 and expected in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
