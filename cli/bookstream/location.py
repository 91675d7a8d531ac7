"""Where a book is, in the words library systems use (FOLIO/Evergreen item statuses)."""

from __future__ import annotations

import msgspec


class BookLocation(msgspec.Struct, frozen=True, kw_only=True):
    """``status`` is one of: ``on_shelf`` (Available), ``in_storage`` (Available, in the
    arm's automated storage), ``paged`` (being fetched from the shelves for a request),
    ``held`` (reserved for a request being decided), ``checked_out`` (lent to ``user``),
    ``in_transit`` (travelling back to the shelves)."""

    book: str
    status: str
    user: str | None = None
    request_id: str | None = None

    def describe(self) -> str:
        return {
            "on_shelf": "on the shelf (available)",
            "in_storage": "in the automated storage (available)",
            "paged": f"being fetched from the shelves for request {self.request_id}",
            "held": f"reserved for request {self.request_id}, being decided",
            "checked_out": f"lent to {self.user}",
            "in_transit": "in transit back to the shelves",
        }.get(self.status, self.status)


def from_state(book: str, lending_status: bytes | None, off_shelf: int) -> BookLocation:
    if lending_status is None:
        status = "in_transit" if off_shelf > 0 else "on_shelf"
        return BookLocation(book=book, status=status)
    value = lending_status.decode()
    kind, _, who = value.partition(":")
    if kind == "storage":
        return BookLocation(book=book, status="in_storage")
    if kind == "lent":
        return BookLocation(book=book, status="checked_out", user=who)
    if kind == "held":
        return BookLocation(book=book, status="held", request_id=who)
    if kind == "paged":
        return BookLocation(book=book, status="paged", request_id=who)
    return BookLocation(book=book, status=value)
