"""What a service plugs into the shared runtime."""

from __future__ import annotations

from typing import Protocol

from bookstream_core.types import ServiceName


class InvalidEvent(ValueError):
    """An inbox entry that cannot be applied; ``reason`` goes to the dead-letter entry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Service(Protocol):
    """A service's own logic: decode its inbox's events and apply a batch atomically.

    ``apply`` is handed events that ``decode`` accepted, in inbox order, and must apply
    them (and XACK them) in server-side calls; it logs and counts the outcomes.
    """

    name: ServiceName

    async def load(self) -> None:
        """Load the service's functions library."""

    def decode(self, payload: bytes) -> object:
        """Parse and validate one entry's ``e`` field; raise InvalidEvent."""

    async def apply(self, batch: list[tuple[bytes, object]]) -> None:
        """Apply the events atomically (one or few round trips), ack them."""

    def guard_key(self, request_id: str) -> str:
        """A key whose existence means the request is in flight ('' if none)."""
