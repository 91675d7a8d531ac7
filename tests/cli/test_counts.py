"""Counts in what users read agree with their nouns: "1 book", never "1 books"."""

from __future__ import annotations

import pytest
from bookstream.audit import AuditReport
from bookstream.render import counted, render_audit

from tests.conftest import RedisServer, run_cli


def test_a_count_and_its_noun_agree() -> None:
    assert [counted(n, "book") for n in (0, 1, 2)] == ["0 books", "1 book", "2 books"]
    assert counted(1, "entry", "entries") == "1 entry"
    assert counted(3, "entry", "entries") == "3 entries"


def test_the_audit_line_says_one_of_each_in_the_singular() -> None:
    report = AuditReport("x", books_lent=1, borrowers=1, in_storage=1, outcomes_replayed=1)
    assert render_audit(report) == (
        "audit of library x: OK (1 book lent to 1 user, 1 in storage, 1 outcome replayed)"
    )
    report.violations.append("something is wrong")
    assert render_audit(report).splitlines() == [
        "audit of library x: 1 VIOLATION (1 book lent to 1 user, 1 in storage, 1 outcome replayed)",
        "  violation: something is wrong",
    ]


@pytest.mark.usefixtures("served")
def test_the_cli_counts_one_book_and_one_user_in_the_singular(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
) -> None:
    lent = run_cli(bookstream_env, "request", "u1", "geb", server=redis_server)
    assert lent.returncode == 0, lent.stderr
    held = run_cli(bookstream_env, "status", "--borrower", "u1", server=redis_server)
    assert held.stdout.strip() == "'u1' holds 1 book: 'geb'"
    audit = run_cli(bookstream_env, "audit", server=redis_server)
    assert audit.stdout.startswith(
        "audit of library main: OK (1 book lent to 1 user, 0 in storage, 1 outcome replayed)"
    ), audit.stdout
