"""Type aliases shared across the runtime."""

from typing import Literal

ServiceName = Literal["lending", "shelving"]
OutcomeStatus = Literal["accepted", "denied", "processed", "rejected"]
OutcomeKind = Literal["request", "return"]
#: A raw stream entry as redis-py returns it (decode_responses=False).
RawFields = dict[bytes, bytes]
RawEntry = tuple[bytes, RawFields]
