"""How outcomes look in a terminal. An id (a request's, a user's, a book's) is printed as
its repr, ``'geb'``, in every message: quoted, so that spaces, commas and quotes in it read
unambiguously, and escaped, so that a control character in one is shown, never obeyed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from bookstream_core.events import Outcome

if TYPE_CHECKING:  # the audit's code loads only when an audit runs
    from bookstream.audit import AuditReport

#: Every reason an outcome may give (types.UnavailableReason, types.DenialReason), in
#: words; a rejection's own text is shown as it is.
REASONS: dict[str, str] = {
    "lent": "lent to another user",
    "held_by_you": "you already have it",
    "reserved": "reserved by another request in flight",
    "none_available": "none of the books is available",
    "limit": "it would take you over the limit",
    "not_held": "none of these books is lent to you",
    "shelving_timeout": "the shelves did not answer in time; nothing was lent",
    "fetch_failed": "the shelves could not fetch the books; nothing was lent",
}


def counted(number: int, noun: str, plural: str = "") -> str:
    """``1 book``, ``2 books``: a count with its noun in the right number."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def render_audit(report: AuditReport) -> str:
    """The audit's verdict line, then each violation and note: ``bookstream audit`` and
    the demo print the same."""
    verdict = "OK" if report.ok else counted(len(report.violations), "VIOLATION", "VIOLATIONS")
    lines = [
        f"audit of library {report.library}: {verdict} ("
        f"{counted(report.books_lent, 'book')} lent to {counted(report.borrowers, 'user')}, "
        f"{report.in_storage} in storage, {counted(report.outcomes_replayed, 'outcome')} "
        "replayed)"
    ]
    lines += [f"  violation: {violation}" for violation in report.violations]
    lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)


def books(names: Iterable[str]) -> str:
    listed = [repr(n) for n in names]
    return ", ".join(listed) if listed else "none"


def _requested(outcome: Outcome) -> list[str]:
    lines = [f"  lent:         {books(outcome.lent)}"]
    for item in outcome.unavailable:
        lines.append(f"  unavailable:  {item.book!r} ({REASONS.get(item.reason, item.reason)})")
    return lines


def _returned(outcome: Outcome) -> list[str]:
    lines = [f"  returned:     {books(outcome.returned)}"]
    if outcome.not_held:
        lines.append(f"  not held:     {books(outcome.not_held)}")
    return lines


#: What an outcome of each kind shows besides its head and the books in hand.
DETAILS: dict[str, Callable[[Outcome], list[str]]] = {"request": _requested, "return": _returned}


def render_outcome(outcome: Outcome) -> str:
    head = f"{outcome.kind} {outcome.request_id!r}"
    if outcome.user:
        head += f" by {outcome.user!r}"
    head += f": {outcome.status.upper()}"
    if outcome.reason:
        head += f" ({REASONS.get(outcome.reason, outcome.reason)})"
    lines = [head]
    if outcome.status != "rejected":
        lines += DETAILS[outcome.kind](outcome)
        limit = f"/{outcome.limit}" if outcome.limit is not None else ""
        lines.append(
            f"  in hand ({len(outcome.books_in_hand)}{limit}): {books(outcome.books_in_hand)}"
        )
    return "\n".join(lines)
