"""Type aliases shared across the runtime."""

from typing import Literal

ServiceName = Literal["lending", "shelving"]
OutcomeStatus = Literal["accepted", "denied", "processed", "rejected"]
OutcomeKind = Literal["request", "return"]
#: Why a book of a request was not lent: to another user, to the requester already, or
#: reserved by another request in flight.
UnavailableReason = Literal["lent", "held_by_you", "reserved"]
#: Why a request or return was denied (a rejection's reason is free text: why it was set
#: aside). tests/lending/test_contract.py finds each on a path of lending.lua.
DenialReason = Literal["none_available", "limit", "not_held", "shelving_timeout", "fetch_failed"]


def text(value: bytes | str | int | float | None) -> str:
    """A Redis reply value as text (the clients here do not decode responses)."""
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
