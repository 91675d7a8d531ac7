"""What a stored outcome, or the door's refusal, means for one submission.

Anyone may publish on an outcome's channel and a malformed twin may carry another
patron's request id, so the client believes only a stored outcome that is this request's,
this user's and this kind's, and only its own submission's rejection.
"""

from __future__ import annotations

import msgspec
from bookstream_core.events import Outcome, Submission, decode_outcome, event_type
from redis.exceptions import ResponseError

from bookstream.errors import BadInput


def stored_outcome(
    raw: bytes | str | None, request_id: str, submit: Submission | None
) -> Outcome | None:
    """The stored outcome of ``request_id`` if it is one; for a submission, it must be this
    user's and of this kind (a request id stays with its first user: BadInput)."""
    if raw is None:
        return None
    try:
        outcome = decode_outcome(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # not an outcome (written by someone else): keep waiting for one
    if outcome.request_id != request_id:
        return None
    if submit is None or outcome.status == "rejected":
        return outcome
    if (outcome.kind, outcome.user) != (event_type(submit), submit.user):
        raise taken(request_id)
    # Two submissions of one id with other books may both pass the door before either is
    # applied: the second is a duplicate, and this outcome is the first's. (An outcome
    # stored before outcomes named their books names none.)
    if outcome.books and set(outcome.books) != set(submit.books):
        raise taken(request_id, other_books=True)
    return outcome


def taken(request_id: str, *, other_books: bool = False) -> BadInput:
    """The request id is another user's or kind's, or was used for other books: found by
    the client or the door."""
    used = "for other books" if other_books else "by another user or for another kind of event"
    return BadInput(f"request id {request_id!r} was already used {used}: choose another id")


def someone_elses_rejection(found: Outcome | None, mine: str | None) -> bool:
    return (
        found is not None
        and found.status == "rejected"
        and mine is not None
        # A rejection naming no submission is of an entry Redis cut (over the bounds), which
        # the door never lets through: never this client's own (breaker: an oversized twin).
        and found.submission != mine
    )


def refusal(exc: ResponseError, request_id: str) -> Exception:
    """The door's refusals are the caller's mistake (exit 2); the rest is Redis's."""
    message = str(exc).split(" script:", 1)[0]
    if message.startswith("BSTAKEN "):  # (the door's words name the id bare)
        return taken(request_id, other_books="other books" in message)
    if message.startswith("BSBAD "):
        return BadInput(message.split(" ", 1)[1])
    return exc
