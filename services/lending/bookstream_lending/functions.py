"""Typed wrapper of the ``bookstream_lending_v1`` functions library (lending.lua)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import redis.asyncio as aioredis
from bookstream_core.config import DomainSettings, RuntimeSettings
from bookstream_core.events import SCHEMA_VERSION
from bookstream_core.functions import load_library, read_library
from bookstream_core.keys import LibraryKeys
from bookstream_core.packed import execute_packed

from bookstream_lending.kinds import stream_kinds_lua

SOURCE = read_library(
    "bookstream_lending", "lending.lua", "outcome.lua", "context.lua", "aside.lua", "door.lua",
    constants={"LENDING_STREAM_KINDS": stream_kinds_lua()},
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LendingRow:
    """One event's result: ``status`` is accepted, denied, processed, pending (waiting for
    shelving), duplicate (applied before), orphan (dead-lettered by the script), rejected
    (dead-lettered, and its client answered ``rejected``), deferred (left pending: a key
    of its own is of the wrong type, ``reason`` says which) or stale (no longer pending:
    another worker applied it or set it aside)."""

    type: str
    status: str
    reason: str
    books: int
    latency_ms: int
    outcome: bytes


class Admitted(NamedTuple):
    """What one bs1_admit call did."""

    moved: int
    #: Submissions still in the list (more than one call's worth).
    waiting: int


class LendingCall(NamedTuple):
    """One entry as bs1_lending_apply takes it (its ARGV slots, in this order)."""

    entry_id: bytes | str
    type: str
    request_id: str
    #: The requester (request, return); '' for Shelving's replies.
    user: str
    books: list[str]


def apply_arguments(
    domain: DomainSettings,
    runtime: RuntimeSettings,
    events: Sequence[LendingCall],
    *,
    with_outcomes: bool,
    fence: bool = True,
) -> list[bytes | str | int]:
    """ARGV of bs1_lending_apply (lending.lua documents the layout). ``fence=False`` only
    for the benchmark reference, whose calls name entries that were never pending."""
    args: list[bytes | str | int] = [
        "lending",
        domain.user_limit,
        domain.storage_capacity,
        runtime.retention_s,
        runtime.events_maxlen,
        1 if with_outcomes else 0,
        SCHEMA_VERSION,
        1 if fence else 0,
    ]
    for entry_id, type_, request_id, user, books in events:
        args.extend((entry_id, type_, request_id, user, len(books)))
        args.extend(books)
    return args


class LendingFunctions:
    def __init__(self, r: aioredis.Redis, keys: LibraryKeys) -> None:
        self._r = r
        self._inbox = keys.inbox("lending")
        self._submissions = keys.submissions
        self._keys = (keys.inbox("shelving"), keys.domain_events)

    async def load(self) -> None:
        await load_library(self._r, SOURCE)

    async def submit(self, payload: bytes | str) -> int:
        """The door (door.lua): validate a client's event and append it to the
        submissions; returns how many wait to be admitted. Raises ResponseError ``BSBAD``
        (refused), ``BSTAKEN`` (Lending recorded the id for another user or kind),
        ``BSENV`` (Redis's trouble)."""
        waiting: int = await self._r.fcall("bs1_submit", 1, self._submissions, payload)
        return waiting

    async def admit(self, most: int, budget_bytes: int) -> Admitted:
        """Move the oldest submissions into the inbox (door.lua)."""
        moved, left = await self._r.fcall(
            "bs1_admit", 2, self._submissions, self._inbox, most, budget_bytes
        )
        return Admitted(int(moved), int(left))

    async def apply(
        self,
        stream: str,
        domain: DomainSettings,
        runtime: RuntimeSettings,
        events: Sequence[LendingCall],
        *,
        with_outcomes: bool = True,
    ) -> list[LendingRow]:
        """events: (entry id, type, request id, user, books), all read from ``stream`` (the
        inbox or the replies). Without ``with_outcomes`` the rows' ``outcome`` is empty
        (the outcomes are stored and announced all the same)."""
        args = apply_arguments(domain, runtime, events, with_outcomes=with_outcomes)
        rows = await execute_packed(
            self._r, "FCALL", "bs1_lending_apply", 3, stream, *self._keys, *args
        )
        return [_applied(row) for row in rows]

    async def expire(
        self,
        domain: DomainSettings,
        runtime: RuntimeSettings,
        *,
        deadline_ms: int,
        limit: int = 100,
        with_outcomes: bool = True,
    ) -> list[LendingRow]:
        """Deny up to ``limit`` requests that have waited for shelving past the deadline
        (rows of type ``expired``, status ``denied``, reason ``shelving_timeout``)."""
        args = apply_arguments(domain, runtime, (), with_outcomes=with_outcomes)
        rows = await self._r.fcall(
            "bs1_lending_expire", 3, self._inbox, *self._keys, *args, deadline_ms, limit
        )
        return [_applied(row) for row in rows]


def _applied(row: list[bytes]) -> LendingRow:
    return LendingRow(
        row[0].decode(), row[1].decode(), row[2].decode(), int(row[3]), int(row[4]), row[5]
    )
