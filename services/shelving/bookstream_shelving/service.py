"""Shelving's handlers: take books off the shelves for lending, put returned ones back."""

from __future__ import annotations

import redis.asyncio as aioredis
from bookstream_core.config import WorkerSettings
from bookstream_core.events import (
    FetchEvent,
    ReshelveEvent,
    UnfetchEvent,
    event_type,
    shelving_decoder,
)
from bookstream_core.keys import LibraryKeys
from bookstream_core.logging import get_logger
from bookstream_core.metrics import Metrics, Tally
from bookstream_core.service import InvalidEvent, decode_event
from bookstream_core.types import ServiceName

from bookstream_shelving.functions import ShelvingCall, ShelvingFunctions


class ShelvingService:
    name: ServiceName = "shelving"

    def __init__(
        self, r: aioredis.Redis, keys: LibraryKeys, settings: WorkerSettings, metrics: Metrics
    ) -> None:
        self.functions = ShelvingFunctions(r, keys)
        self.settings = settings
        self.metrics = metrics
        self.library = keys.library
        self.streams = keys.streams("shelving")
        self.admission = None  # only Lending's inbox takes submissions
        self.log = get_logger(service="shelving", worker=settings.name, library=keys.library)
        self.log_events = settings.observability.log_level == "debug"

    async def load(self) -> None:
        await self.functions.load()

    def decode(self, stream: str, payload: bytes) -> object:
        event = decode_event(shelving_decoder, payload, self.library)
        # Lending names a request's fetch "<id>:fetch" and its cancellation "<id>:unfetch";
        # holding every producer to that lets a forged fetch be undone (lending.lua).
        if isinstance(event, FetchEvent) and event.event_id != f"{event.id}:fetch":
            raise InvalidEvent(f"invalid_event: a fetch's eid must be {event.id}:fetch")
        if isinstance(event, UnfetchEvent) and (
            event.fetch != f"{event.id}:fetch" or event.event_id != f"{event.id}:unfetch"
        ):
            raise InvalidEvent("invalid_event: an unfetch must name its request's fetch")
        return event

    def guard_key(self, request_id: str) -> str:
        return ""  # shelving's events are never the first answer to a request

    async def tend(self) -> None:
        """Nothing of shelving's own waits for a deadline."""

    async def apply(self, stream: str, batch: list[tuple[bytes, object]]) -> None:
        events: list[ShelvingCall] = []
        for entry_id, event in batch:
            assert isinstance(event, FetchEvent | ReshelveEvent | UnfetchEvent)
            # The kinds are shelving.lua's HANDLERS; only an unfetch names another event.
            fetch = event.fetch if isinstance(event, UnfetchEvent) else ""
            events.append(
                ShelvingCall(
                    entry_id, event_type(event), event.id, event.event_id, fetch, event.books
                )
            )
        rows = await self.functions.apply(self.settings.runtime, events)
        m, tally = self.metrics, Tally(self.metrics)
        for (entry_id, event), row in zip(batch, rows, strict=True):
            tally.add(m.events, self.library, "shelving", stream, row.type)
            if row.status == "orphan":
                tally.add(m.dead_letters, self.library, "shelving", "script_error")
                self.log.warning("dead letter", entry=entry_id.decode(), type=row.type)
            elif self.log_events:
                self.log.debug(
                    f"{row.type} {row.status}",
                    request_id=getattr(event, "id", None),
                    books=row.books,
                )
        tally.flush()
