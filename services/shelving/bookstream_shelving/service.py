"""Shelving's handlers: take books off the shelves for lending, put returned ones back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from bookstream_core.config import WorkerSettings
from bookstream_core.events import (
    EventBase,
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


class ShelvingKind(NamedTuple):
    """How Shelving takes one event kind."""

    #: What its apply call passes on: the event's own id, the fetch it names ('' but for
    #: an unfetch, the one kind naming another event) and its books.
    arguments: Callable[[Any], tuple[str, str, list[str]]]
    #: Why a producer's event of this kind is refused ('' if it is not). Lending names a
    #: request's fetch "<id>:fetch" and its cancellation "<id>:unfetch"; holding every
    #: producer to that lets a forged fetch be undone (lending.lua).
    refusal: Callable[[Any], str]


def _own(event: Any) -> tuple[str, str, list[str]]:
    return event.event_id, "", event.books


def _accepted(event: Any) -> str:
    return ""


#: Shelving's event kinds, one row each; shelving.lua's HANDLERS has the same kinds, and
#: a new kind is a row in each.
ARGUMENTS: dict[type[EventBase], ShelvingKind] = {
    FetchEvent: ShelvingKind(
        _own,
        lambda e: "" if e.event_id == f"{e.id}:fetch" else f"a fetch's eid must be {e.id}:fetch",
    ),
    ReshelveEvent: ShelvingKind(_own, _accepted),
    UnfetchEvent: ShelvingKind(
        lambda e: (e.event_id, e.fetch, e.books),
        lambda e: (
            ""
            if (e.fetch, e.event_id) == (f"{e.id}:fetch", f"{e.id}:unfetch")
            else "an unfetch must name its request's fetch"
        ),
    ),
}


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
        refusal = ARGUMENTS[type(event)].refusal(event)
        if refusal:
            raise InvalidEvent(f"invalid_event: {refusal}")
        return event

    def guard_key(self, request_id: str) -> str:
        return ""  # shelving's events are never the first answer to a request

    async def tend(self) -> None:
        """Nothing of shelving's own waits for a deadline."""

    async def apply(self, stream: str, batch: list[tuple[bytes, object]]) -> None:
        events: list[ShelvingCall] = []
        for entry_id, event in batch:
            assert isinstance(event, EventBase)
            event_id, fetch, books = ARGUMENTS[type(event)].arguments(event)
            events.append(
                ShelvingCall(entry_id, event_type(event), event.id, event_id, fetch, books)
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
