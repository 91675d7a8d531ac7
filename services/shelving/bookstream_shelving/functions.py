"""Typed wrapper of the ``bookstream_shelving_v1`` functions library (shelving.lua)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import redis.asyncio as aioredis
from bookstream_core.config import RuntimeSettings
from bookstream_core.events import SCHEMA_VERSION
from bookstream_core.functions import load_library, read_library
from bookstream_core.keys import LibraryKeys
from bookstream_core.packed import execute_packed

SOURCE = read_library("bookstream_shelving", "shelving.lua")


class ShelvingCall(NamedTuple):
    """One entry as bs1_shelving_apply takes it (its ARGV slots, in this order)."""

    entry_id: bytes
    type: str
    request_id: str
    #: Lending's id for this event (``<request>:fetch``...): what makes it applied once.
    event_id: str
    #: The fetch an ``unfetch`` cancels; '' for the other kinds.
    fetch: str
    books: list[str]


@dataclass(frozen=True, slots=True)
class ShelvingRow:
    """``status``: applied, duplicate (applied before), orphan (dead-lettered) or stale
    (no longer pending: another worker applied it or set it aside)."""

    type: str
    status: str
    books: int


class ShelvingFunctions:
    def __init__(self, r: aioredis.Redis, keys: LibraryKeys) -> None:
        self._r = r
        self._keys = (keys.inbox("shelving"), keys.replies)

    async def load(self) -> None:
        await load_library(self._r, SOURCE)

    async def apply(
        self, runtime: RuntimeSettings, events: list[ShelvingCall]
    ) -> list[ShelvingRow]:
        args: list[bytes | str | int] = [
            "shelving",
            runtime.retention_s,
            runtime.events_maxlen,
            SCHEMA_VERSION,
        ]
        for entry_id, type_, request_id, event_id, fetch_id, books in events:
            args.extend((entry_id, type_, request_id, event_id, fetch_id, len(books)))
            args.extend(books)
        rows = await execute_packed(self._r, "FCALL", "bs1_shelving_apply", 2, *self._keys, *args)
        return [ShelvingRow(row[0].decode(), row[1].decode(), int(row[2])) for row in rows]
