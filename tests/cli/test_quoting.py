"""One rule for an id in the CLI's messages (docs/design.md, conventions): its repr, the
same in an outcome, a status line and an error, whichever command prints it."""

from __future__ import annotations

import json

import pytest
from bookstream.render import render_outcome
from bookstream_core.events import Outcome, Unavailable

from tests.conftest import RedisServer, run_cli

USER, BOOK = "ann lee", "the book, vol. 2"


@pytest.mark.usefixtures("served")
def test_an_id_with_a_space_is_quoted_alike_by_every_command(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    def cli(*args: str) -> tuple[int, str, str]:
        done = run_cli(bookstream_env, *args, server=redis_server)
        return done.returncode, done.stdout, done.stderr

    code, lent, _ = cli("request", USER, BOOK, "--request-id", "q-1")
    assert code == 0
    assert lent.splitlines()[0] == "request 'q-1' by 'ann lee': ACCEPTED"
    assert "  lent:         'the book, vol. 2'\n" in lent
    assert "  in hand (1/5): 'the book, vol. 2'\n" in lent
    assert cli("outcome", "q-1")[1] == lent  # re-read, printed the same
    assert cli("status", "--borrower", USER)[1] == "'ann lee' holds 1 book: 'the book, vol. 2'\n"
    assert cli("status", "--book", BOOK)[1] == "'the book, vol. 2': lent to 'ann lee'\n"
    code, _, reused = cli("return", USER, BOOK, "--request-id", "q-1")
    assert code == 2 and reused.startswith("bookstream: error: request id 'q-1' was already used")
    code, _, unknown = cli("outcome", "q-2")
    assert code == 2 and unknown.startswith("bookstream: error: unknown request id 'q-2': ")
    code, _, spaced = cli("request", f" {USER}", BOOK)
    assert code == 2 and "user id ' ann lee' starts or ends with white space" in spaced
    # --json is JSON, never a repr.
    assert json.loads(cli("outcome", "q-1", "--json")[1])["user"] == USER


def test_a_control_character_in_a_stored_id_is_shown_escaped() -> None:
    """Ids read back from Redis are whatever was written there: shown, never obeyed."""
    outcome = Outcome(
        request_id="q-1",
        kind="request",
        status="accepted",
        user="eve\x1b[2J",
        lent=["a\nb"],
        unavailable=[Unavailable("O'Brien's", "lent")],
        books_in_hand=["a\nb"],
    )
    shown = render_outcome(outcome)
    assert "\x1b" not in shown and len(shown.splitlines()) == 4
    assert shown.splitlines()[0] == "request 'q-1' by 'eve\\x1b[2J': ACCEPTED"
    assert "lent:         'a\\nb'" in shown
    assert "unavailable:  \"O'Brien's\" (lent to another user)" in shown
