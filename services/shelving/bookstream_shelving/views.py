"""Shelving's read API: how often a book is counted off the shelves.

Shelving owns its keys (``keys.py``); nobody else reads them. One book's count comes from
Shelving's own read-only function ``bs1_shelving_off_count``.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from bookstream_core.keys import LibraryKeys
from bookstream_core.keytypes import typed
from bookstream_core.types import text
from redis.exceptions import ResponseError

from bookstream_shelving.keys import ShelvingKeys


class ShelvingView:
    def __init__(self, r: aioredis.Redis, library: LibraryKeys) -> None:
        self._r = r
        self._library = library
        self._keys = ShelvingKeys(library)

    async def off_count(self, book: str) -> int:
        """How many times the book is off the shelves (0: on them)."""
        try:
            count = await self._r.fcall_ro(
                "bs1_shelving_off_count", 1, self._library.inbox("shelving"), book
            )
        except ResponseError as exc:
            if "Function not found" not in str(exc):
                raise
            return 0  # no Shelving worker ever ran on this Redis: every book is on the shelf
        return int(count)

    async def books_off(self) -> int:
        """How many distinct books are off the shelves."""
        return int(await self._r.hlen(self._keys.off_shelf))

    async def off_counts(self, problems: list[str] | None = None) -> dict[str, str]:
        """Every book off the shelves, with its count as stored (anything but "1" at
        quiescence is wrong). A key of the wrong type goes to ``problems``, read as empty."""
        if not await typed(
            self._r, self._keys.off_shelf, "hash", [] if problems is None else problems
        ):
            return {}
        return {text(k): text(n) for k, n in (await self._r.hgetall(self._keys.off_shelf)).items()}
