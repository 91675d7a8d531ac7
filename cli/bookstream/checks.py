"""The Python client's arguments, checked before anything is sent: a wrong type or a
timeout that is no positive number is ``BadInput`` (it was an AttributeError from deep
inside, or a request submitted and lent, then OutcomeTimeout for ``timeout=0``)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from bookstream.errors import BadInput


def text(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise BadInput(f"{what} must be a str, not {type(value).__name__} {value!r}")
    return value


def optional_text(what: str, value: object) -> str | None:
    return None if value is None else text(what, value)


def books_of(books: Iterable[str]) -> list[str]:
    # One string is an iterable of letters: request("u", "geb") lent g, e and b.
    if isinstance(books, str | bytes):
        raise BadInput("books must be a list of book ids, not one string")
    try:
        listed = list(books)
    except TypeError:
        raise BadInput(f"books must be a list of book ids, not {books!r}") from None
    return [text("book id", book) for book in listed]


def seconds(what: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise BadInput(f"{what} must be a positive number of seconds, not {value!r}")
    return float(value)
