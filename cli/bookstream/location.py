"""Where a book is, in the words library systems use (FOLIO/Evergreen item statuses)."""

from __future__ import annotations

import msgspec
from bookstream_lending.views import LendingView
from bookstream_shelving.views import ShelvingView


class BookLocation(msgspec.Struct, frozen=True, kw_only=True):
    """``status`` is one of: ``on_shelf`` (Available), ``in_storage`` (Available, in the
    arm's automated storage), ``paged`` (being fetched from the shelves for a request),
    ``reserved`` (taken from the automated storage for a request being decided),
    ``checked_out`` (lent to ``user``), ``in_transit`` (travelling back to the shelves)."""

    book: str
    status: str
    user: str | None = None
    request_id: str | None = None

    def describe(self) -> str:
        return {
            "on_shelf": "on the shelf (available)",
            "in_storage": "in the automated storage (available)",
            "paged": f"being fetched from the shelves for request {self.request_id!r}",
            "reserved": f"reserved for request {self.request_id!r}, being decided",
            "checked_out": f"lent to {self.user!r}",
            "in_transit": "in transit back to the shelves",
        }.get(self.status, self.status)


async def locate(lending: LendingView, shelving: ShelvingView, book: str) -> BookLocation:
    """Lending's record first; a book Lending has no record of is on the shelves, or on
    its way back to them while Shelving still counts it off."""
    status = await lending.book(book)
    if status is None:
        off = await shelving.off_count(book)
        return BookLocation(book=book, status="in_transit" if off > 0 else "on_shelf")
    if status.kind == "storage":
        return BookLocation(book=book, status="in_storage")
    if status.kind == "lent":
        return BookLocation(book=book, status="checked_out", user=status.user)
    # reserved (taken from the storage) or paged (being fetched), for a request in flight
    return BookLocation(book=book, status=status.kind, request_id=status.request_id)
