"""Type aliases shared across the runtime."""

from typing import Literal

ServiceName = Literal["lending", "shelving"]
OutcomeStatus = Literal["accepted", "denied", "processed", "rejected"]
OutcomeKind = Literal["request", "return"]


def text(value: bytes | str | int | float | None) -> str:
    """A Redis reply value as text (the clients here do not decode responses)."""
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
