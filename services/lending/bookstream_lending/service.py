"""Lending's handlers: validate inbox events, apply a batch in one call, log and count."""

from __future__ import annotations

import redis.asyncio as aioredis
from bookstream_core.config import WorkerSettings
from bookstream_core.events import (
    EventBase,
    decode_outcome,
    event_type,
    lending_decoder,
)
from bookstream_core.keys import LibraryKeys
from bookstream_core.logging import get_logger
from bookstream_core.metrics import Metrics, Tally
from bookstream_core.service import InvalidEvent, decode_event
from bookstream_core.types import ServiceName

from bookstream_lending.functions import LendingCall, LendingFunctions, LendingRow
from bookstream_lending.keys import LendingKeys
from bookstream_lending.kinds import DECIDES, KINDS

FINAL = ("accepted", "denied", "processed")

#: One admission call moves at most this many submissions, or stops after about this
#: many bytes: it is one atomic call, which must stay short whatever clients pushed.
ADMIT_MOST, ADMIT_BUDGET = 512, 4 * 1024 * 1024


class Admission:
    """The clients' submissions into the inbox (bs1_admit)."""

    def __init__(self, functions: LendingFunctions, keys: LibraryKeys) -> None:
        self.functions = functions
        self.queue = keys.submissions
        self.doorbell = keys.doorbell

    async def admit(self) -> tuple[int, int]:
        return await self.functions.admit(ADMIT_MOST, ADMIT_BUDGET)


class LendingService:
    name: ServiceName = "lending"

    def __init__(
        self, r: aioredis.Redis, keys: LibraryKeys, settings: WorkerSettings, metrics: Metrics
    ) -> None:
        self.functions = LendingFunctions(r, keys)
        self.own_keys = LendingKeys(keys)
        self.settings = settings
        self.metrics = metrics
        self.library = keys.library
        self.streams = keys.streams("lending")
        self.admission = Admission(self.functions, keys)
        # The name (kinds.py) of each stream a kind may arrive on.
        self.stream_names = {keys.inbox("lending"): "inbox", keys.replies: "replies"}
        self.log = get_logger(service="lending", worker=settings.name, library=keys.library)
        self.log_outcomes = settings.observability.log_level in ("debug", "info")

    async def load(self) -> None:
        await self.functions.load()

    def decode(self, stream: str, payload: bytes) -> object:
        event = decode_event(lending_decoder, payload, self.library)
        if KINDS[event_type(event)].stream != self.stream_names[stream]:
            raise InvalidEvent(f"wrong_stream: a {event_type(event)} event on {stream}")
        return event

    def guard_key(self, request_id: str) -> str:
        return self.own_keys.request(request_id)

    async def apply(self, stream: str, batch: list[tuple[bytes, object]]) -> None:
        events: list[LendingCall] = []
        for entry_id, event in batch:
            assert isinstance(event, EventBase)
            user, books = KINDS[event_type(event)].arguments(event)
            events.append(LendingCall(entry_id, event_type(event), event.id, user, books))
        # The outcomes' JSON only travels back when it is logged.
        rows = await self.functions.apply(
            stream,
            self.settings.domain,
            self.settings.runtime,
            events,
            with_outcomes=self.log_outcomes,
        )
        tally = Tally(self.metrics)
        for (entry_id, event), row in zip(batch, rows, strict=True):
            self._account(stream, entry_id, event, row, tally)
        tally.flush()

    async def tend(self) -> None:
        """Deny the requests shelving has not answered within the deadline."""
        rows = await self.functions.expire(
            self.settings.domain,
            self.settings.runtime,
            deadline_ms=self.settings.runtime.request_deadline_s * 1000,
            with_outcomes=self.log_outcomes,
        )
        tally = Tally(self.metrics)
        for row in rows:
            self._account(self.streams[0], b"-", None, row, tally)
        tally.flush()
        if rows:
            self.log.warning("requests given up: shelving did not answer in time", count=len(rows))

    def _account(
        self, stream: str, entry_id: bytes, event: object, row: LendingRow, tally: Tally
    ) -> None:
        m, lib = self.metrics, self.library
        tally.add(m.events, lib, "lending", stream, row.type)
        if row.status in ("orphan", "rejected"):
            tally.add(m.dead_letters, lib, "lending", row.reason.split(":", 1)[0])
            self.log.warning("dead letter", entry=entry_id.decode(), reason=row.reason)
            if row.status == "rejected":  # its client was answered
                tally.add(m.outcomes_by_kind[DECIDES[row.type]], lib, "rejected")
            return
        if row.status not in FINAL:
            if row.status == "deferred":  # retried with the claims; set aside at the bound
                self.log.warning("entry left pending: a key of its own is damaged",
                                 entry=entry_id.decode(), reason=row.reason)  # fmt: skip
            elif row.status == "duplicate" and self.log_outcomes:
                self.log.info(
                    "duplicate event ignored", request_id=getattr(event, "id", None), type=row.type
                )
            return
        kind = DECIDES[row.type]
        tally.add(m.outcomes_by_kind[kind], lib, row.status)
        if row.status == "accepted":
            tally.add(m.books_lent, lib, amount=row.books)
        elif row.status == "processed":
            tally.add(m.books_returned, lib, amount=row.books)
        if row.status == "denied":
            tally.add(m.denials, lib, kind, row.reason)
        m.child(m.request_latency, lib, kind).observe(max(row.latency_ms, 0) / 1000)
        if self.log_outcomes:
            self._log_outcome(kind, row)

    def _log_outcome(self, kind: str, row: LendingRow) -> None:
        outcome = decode_outcome(row.outcome)
        fields: dict[str, object] = {
            "request_id": outcome.request_id,
            "user": outcome.user,
            "in_hand": len(outcome.books_in_hand),
        }
        if outcome.reason:
            fields["reason"] = outcome.reason
        # Whatever the kind, the lists its outcome has (no branch per kind).
        for name in ("lent", "returned", "not_held"):
            if books := getattr(outcome, name):
                fields[name] = books
        if outcome.unavailable:
            fields["unavailable"] = {u.book: u.reason for u in outcome.unavailable}
        self.log.info(f"{kind} {outcome.status}", **fields)
