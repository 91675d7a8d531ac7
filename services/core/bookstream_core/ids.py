"""Bounds on the ids people type: user ids, book ids, request ids.

A book id may contain commas and spaces (events are JSON, not comma-joined strings);
what it may not contain are control characters, and it is bounded in length so that one
hostile entry cannot make keys or events arbitrarily large.
"""

from __future__ import annotations

import re
import secrets
import time

MAX_ID_LENGTH = 200
MAX_REQUEST_ID_LENGTH = 64
MAX_BOOKS_PER_EVENT = 32

# No C0 or C1 control character, DEL, or Unicode line/paragraph separator, and no white
# space at either end. ``\Z``, not ``$``: ``$`` also matches before a final newline, and
# these patterns are searched (msgspec), so each must pin the whole string itself.
ID_PATTERN = r"^(?!\s)[^\x00-\x1f\x7f-\x9f\u2028\u2029]+(?<!\s)\Z"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*\Z"
_ID_RE = re.compile(ID_PATTERN)
_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)


class InvalidId(ValueError):
    """An id a person typed is out of bounds; the message says how."""


def _utf8(what: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 (argv's surrogate escapes)
        raise InvalidId(f"{what} {value!r} is not valid UTF-8") from None


def check_id(what: str, value: str) -> str:
    if not value:
        raise InvalidId(f"{what} must not be empty")
    _utf8(what, value)
    if len(value) > MAX_ID_LENGTH:
        raise InvalidId(f"{what} is {len(value)} characters long; at most {MAX_ID_LENGTH}")
    if value != value.strip():
        raise InvalidId(f"{what} {value!r} starts or ends with white space")
    if not _ID_RE.fullmatch(value):
        raise InvalidId(f"{what} {value!r} contains a control character")
    return value


def check_request_id(value: str) -> str:
    if not value or len(value) > MAX_REQUEST_ID_LENGTH or not _REQUEST_ID_RE.fullmatch(value):
        raise InvalidId(
            f"request id {value!r} must be 1-{MAX_REQUEST_ID_LENGTH} characters of letters, "
            "digits, '_', '.', ':', '-', starting with a letter or digit"
        )
    return value


def check_books(books: list[str]) -> list[str]:
    if not books:
        raise InvalidId("name at least one book")
    if len(books) > MAX_BOOKS_PER_EVENT:
        raise InvalidId(f"{len(books)} books named; at most {MAX_BOOKS_PER_EVENT} per request")
    for book in books:
        check_id("book id", book)
    return books


def new_request_id() -> str:
    """Sortable by time, unique without coordination (48-bit ms + 80 random bits)."""
    return f"{int(time.time() * 1000):012x}-{secrets.token_hex(10)}"
