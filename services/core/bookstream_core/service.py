"""What a service plugs into the shared runtime."""

from __future__ import annotations

from typing import Protocol, TypeVar

import msgspec

from bookstream_core.events import EventBase
from bookstream_core.types import ServiceName

E = TypeVar("E", bound=EventBase)


class InvalidEvent(ValueError):
    """An inbox entry that cannot be applied; ``reason`` goes to the dead-letter entry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Admission(Protocol):
    """Submissions a service takes into its inbox itself (Lending: the clients' list,
    which clients may only append to)."""

    #: The list admitted from, and the channel rung after each submission.
    queue: str
    doorbell: str

    async def admit(self) -> tuple[int, int]:
        """Move the oldest submissions into the inbox in one atomic call; returns
        (admitted, still waiting)."""


class Service(Protocol):
    """A service's own logic: decode its streams' events and apply a batch atomically.

    ``apply`` is handed events that ``decode`` accepted from one stream, in that stream's
    order, and must apply them (and XACK them) in server-side calls; it logs and counts
    the outcomes.
    """

    name: ServiceName
    #: The streams it consumes (``LibraryKeys.streams``), one consumer loop each.
    streams: tuple[str, ...]

    @property
    def admission(self) -> Admission | None:
        """What it admits into its inbox itself, if anything (one more loop in the worker)."""

    async def load(self) -> None:
        """Load the service's functions library."""

    def decode(self, stream: str, payload: bytes) -> object:
        """Parse and validate one entry's ``e`` field, of a kind that may arrive on
        ``stream``; raise InvalidEvent."""

    async def apply(self, stream: str, batch: list[tuple[bytes, object]]) -> None:
        """Apply the events atomically (one or few round trips), ack them."""

    def guard_key(self, request_id: str) -> str:
        """A key whose existence means the request is in flight ('' if none)."""

    async def tend(self) -> None:
        """The service's own periodic work (lending: give up requests past their deadline)."""


def decode_event(decoder: msgspec.json.Decoder[E], payload: bytes, library: str) -> E:
    """Parse and validate one ``e`` field for a worker of ``library``."""
    try:
        event = decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(f"invalid_event: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"invalid_json: {exc}") from None
    except RecursionError:  # nested deeper than the parser goes: no event is that deep
        raise InvalidEvent("invalid_json: nested too deeply") from None
    if event.library is not None and event.library != library:
        raise InvalidEvent(f"wrong_library: the event is for library {event.library!r}")
    return event
