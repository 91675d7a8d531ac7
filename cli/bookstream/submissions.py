"""What a user may submit, by kind (the rows of ``events.SUBMISSIONS``): the client's
calls for each and the words of its subcommand. The CLI's dispatch, its parser and the
demo read this table, so a new kind (a hold, a renewal) is one row here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bookstream_core.events import Outcome

from bookstream.client import AsyncClient


@dataclass(frozen=True, slots=True)
class Kind:
    #: Submit and wait for the outcome: ``(client, user, books, *, request_id, timeout)``.
    wait: Callable[..., Awaitable[Outcome]]
    #: Submit only, returning the request id: ``(client, user, books, *, request_id)``.
    submit: Callable[..., Awaitable[str]]
    #: The subcommand's one-line help and its description.
    help: str
    description: str


KINDS: dict[str, Kind] = {
    "request": Kind(
        AsyncClient.request,
        AsyncClient.submit_request,
        "ask for books and print what you got",
        "Ask for books; wait for the outcome and print which books were lent, which were "
        "unavailable and why, and the books in hand. Needs a running Lending worker.",
    ),
    "return": Kind(
        AsyncClient.return_books,
        AsyncClient.submit_return,
        "bring books back and print what was taken",
        "Bring books back; print which were returned and which the user did not hold.",
    ),
}
