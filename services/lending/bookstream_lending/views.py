"""Lending's read API: what others (the CLI, the client, the audit) may know of its state.

Lending owns its keys (``keys.py``); nobody else reads them. A book's status comes from
Lending's own read-only function ``bs1_lending_locate``; the rest are plain reads,
gathered here so that a change of layout touches this package only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from bookstream_core.keys import LibraryKeys
from bookstream_core.keytypes import typed
from bookstream_core.types import text
from redis.exceptions import ResponseError

from bookstream_lending.keys import LendingKeys


@dataclass(frozen=True, slots=True)
class BookStatus:
    """Lending's record of a book: ``storage``, ``reserved`` (for ``request_id``, taken from
    the storage), ``paged`` (being fetched for ``request_id``) or ``lent`` (to ``user``)."""

    kind: str
    user: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Totals:
    books_lent: int
    borrowers: int
    in_storage: int
    reserved: int
    being_fetched: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the audit compares: each book's record, the storage, the loans."""

    books: dict[str, BookStatus]
    storage: set[str]
    borrowers: set[str]
    loans: dict[str, set[str]]
    requests_in_flight: list[str]


def parse_status(value: bytes | str) -> BookStatus:
    kind, _, who = text(value).partition(":")
    if kind == "lent":
        return BookStatus("lent", user=who)
    if kind == "held":  # stored as held:<request>: reserved from the automated storage
        return BookStatus("reserved", request_id=who)
    if kind == "paged":
        return BookStatus("paged", request_id=who)
    return BookStatus(kind)


class LendingView:
    def __init__(self, r: aioredis.Redis, library: LibraryKeys) -> None:
        self._r = r
        self._library = library
        self._keys = LendingKeys(library)

    async def book(self, book: str) -> BookStatus | None:
        """Lending's record of the book; None when it has none (on the shelves, or on its
        way back to them)."""
        try:
            value = await self._r.fcall_ro(
                "bs1_lending_locate", 1, self._library.inbox("lending"), book
            )
        except ResponseError as exc:
            if "Function not found" not in str(exc):
                raise
            return None  # no Lending worker ever ran on this Redis: it holds nothing
        return parse_status(value) if value else None

    async def user_books(self, user: str) -> list[str]:
        return sorted(text(b) for b in await self._r.smembers(self._keys.loans(user)))

    async def in_flight(self, request_id: str) -> bool:
        """Whether a request waits for Shelving (it has no outcome yet, but will)."""
        return bool(await self._r.exists(self._keys.request(request_id)))

    async def totals(self) -> Totals:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hvals(self._keys.book_status)
            pipe.scard(self._keys.storage)
            pipe.scard(self._keys.borrowers)
            statuses, in_storage, borrowers = await pipe.execute()
        kinds = [parse_status(s).kind for s in statuses]
        return Totals(
            books_lent=kinds.count("lent"),
            borrowers=int(borrowers),
            in_storage=int(in_storage),
            reserved=kinds.count("reserved"),
            being_fetched=kinds.count("paged"),
        )

    async def snapshot(self, problems: list[str] | None = None) -> Snapshot:
        """Everything at once. A key of the wrong type is described in ``problems`` and
        read as empty."""
        problems = [] if problems is None else problems
        r, keys = self._r, self._keys
        books: dict[str, BookStatus] = {}
        if await typed(r, keys.book_status, "hash", problems):
            books = {
                text(k): parse_status(v) for k, v in (await r.hgetall(keys.book_status)).items()
            }
        loans: dict[str, set[str]] = {}
        prefix = keys.loans("")
        async for key in r.scan_iter(match=prefix + "*", count=1000):
            if await typed(r, text(key), "set", problems):
                loans[text(key)[len(prefix) :]] = {text(b) for b in await r.smembers(key)}
        request_prefix = keys.request("")
        in_flight = {
            text(key)[len(request_prefix) :]
            async for key in r.scan_iter(match=request_prefix + "*", count=1000)
        }
        if await typed(r, keys.in_flight, "zset", problems):
            members = cast(list[bytes], await r.zrange(keys.in_flight, 0, -1))
            in_flight |= {text(m) for m in members}
        storage: set[str] = set()
        if await typed(r, keys.storage, "set", problems):
            storage = {text(b) for b in await r.smembers(keys.storage)}
        borrowers: set[str] = set()
        if await typed(r, keys.borrowers, "set", problems):
            borrowers = {text(u) for u in await r.smembers(keys.borrowers)}
        return Snapshot(
            books=books,
            storage=storage,
            borrowers=borrowers,
            loans=loans,
            requests_in_flight=sorted(in_flight),
        )
