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
    #: Bytes of a cut entry (0 for a whole one: within the bounds, not counted here).
    size: int
    #: For a cut entry: the request id and kind its ``e`` field names (unchecked).
    named: tuple[str, str] = ("", "")


@dataclass(frozen=True, slots=True)
class Batch:
    entries: list[Entry] = field(default_factory=list)
    #: XAUTOCLAIM's next start id ("0-0" when the scan is complete); "" otherwise.
    next_start: str = ""


def _text(value: bytes | str | int) -> str:
    # A producer's bytes: anything but UTF-8 is replaced (and then fails the id checks).
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def parse_batch(reply: list[object]) -> Batch:
    """``bs1_read``'s reply (core.lua documents the layout)."""
    cursor, cuts, deliveries = reply[0], reply[1], reply[2]
    assert isinstance(cuts, list) and isinstance(deliveries, list)
    counts = {deliveries[i]: int(deliveries[i + 1]) for i in range(0, len(deliveries), 2)}
    facts = {int(cuts[i]): cuts[i + 1 : i + 5] for i in range(0, len(cuts), 5)}
    entries = []
    for position, row in enumerate(reply[3:], start=1):
        assert isinstance(row, list)
        entry_id, flat = row
        fields = None if flat is None else dict(zip(flat[::2], flat[1::2], strict=True))
        delivered = counts.get(entry_id, 1)
        if position in facts:
            nfields, size, rid, kind = facts[position]
            named = (_text(rid), _text(kind))
            entries.append(
                Entry(entry_id, delivered, fields, False, int(nfields), int(size), named)
            )
        else:  # whole: within the bounds (its size is not needed)
            count = 0 if fields is None else len(fields)
            entries.append(Entry(entry_id, delivered, fields, True, count, 0))
    return Batch(entries, _text(cursor))  # type: ignore[arg-type]
