"""A batch taken from an inbox by ``bs1_read`` (core.lua), with its size bounded by Redis.

Redis cuts an entry over the bounds (fields, bytes) before it leaves Redis, so that a
worker's memory is bounded by its batch size times the bounds, whatever a producer wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Entry:
    entry_id: bytes
    deliveries: int
    #: None: deleted from the stream while pending (nothing to apply)
    fields: dict[bytes, bytes] | None
    #: False: over the bounds, cut to at most 16 fields of 8 KiB
    whole: bool
    field_count: int
    size: int
    #: For a cut entry: the request id and kind its ``e`` field names (unchecked).
    named: tuple[str, str] = ("", "")


@dataclass(frozen=True, slots=True)
class Batch:
    entries: list[Entry] = field(default_factory=list)
    #: XAUTOCLAIM's next start id ("0-0" when the scan is complete); "" otherwise.
    next_start: str = ""


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_batch(reply: list[object]) -> Batch:
    """``bs1_read``'s reply (core.lua documents the layout)."""
    entries = []
    for row in reply[1:]:
        assert isinstance(row, list)
        entry_id, deliveries, whole, count, size, rid, kind = row[:7]
        flat = row[7:]
        fields = None if int(whole) < 0 else dict(zip(flat[::2], flat[1::2], strict=True))
        entries.append(
            Entry(
                entry_id,
                int(deliveries),
                fields,
                int(whole) != 0,
                int(count),
                int(size),
                (_text(rid), _text(kind)),
            )
        )
    return Batch(entries, _text(reply[0]))  # type: ignore[arg-type]
