"""What a worker sets aside, and whom it answers for it.

An entry is judged on its shape first (bounds: fields, bytes), so that nothing after
scales with a hostile entry's size; one set aside is answered when it names a request
id a client waits on (a ``rejected`` outcome) or a fetch Lending waits on (core.lua).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

from bookstream_core.batch import Entry
from bookstream_core.events import EVENT_FIELD, SUBMISSIONS
from bookstream_core.ids import REQUEST_ID_PATTERN

MAX_ENTRY_BYTES = 64 * 1024
MAX_FIELDS = 16  # an entry has one field, ``e``; a foreign producer may add a few
IDENTIFY_MAX_BYTES = 2 * 1024 * 1024  # still parsed to find whom to answer
DEAD_VALUE_BYTES = 8 * 1024  # a dead-letter entry keeps at most this much of each value
DEAD_FIELDS = 16  # ... and at most this many of the entry's fields
_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)
#: Kinds of entry whose request id is answered when the entry is set aside: a client's
#: with a ``rejected`` outcome, shelving's fetch by telling lending (core.lua).
_ANSWERED_KINDS = (*SUBMISSIONS, "fetch")


@dataclass(frozen=True, slots=True)
class Rejected:
    entry_id: bytes
    fields: dict[bytes, bytes]
    reason: str
    deliveries: int = 1
    #: The entry's own field count (``fields`` may be a cut copy).
    field_count: int | None = None
    #: Request id and kind named by an entry Redis cut (checked like identify's).
    named: tuple[str, str] | None = None

    def identity(self) -> tuple[str, str]:
        if self.named is None:
            return identify(self.fields)
        return checked(*self.named)


def identify(fields: dict[bytes, bytes]) -> tuple[str, str]:
    """Best effort: the request id and kind of an entry we reject, to answer it."""
    raw = fields.get(EVENT_FIELD)
    if raw is None or len(raw) > IDENTIFY_MAX_BYTES:
        return "", ""
    try:
        data = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    return checked(data.get("id"), data.get("type"))


def checked(rid: object, kind: object) -> tuple[str, str]:
    if isinstance(rid, str) and len(rid) <= 64 and _REQUEST_ID_RE.fullmatch(rid):
        return rid, kind if isinstance(kind, str) and kind in _ANSWERED_KINDS else ""
    return "", ""


def whole_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    """An entry read whole, described as bs1_read would (core.lua)."""
    size = sum(len(name) + len(value) for name, value in fields.items())
    whole = len(fields) <= MAX_FIELDS and size <= MAX_ENTRY_BYTES + 1024
    kept = fields if whole else dict(list(fields.items())[:DEAD_FIELDS])
    named = ("", "") if whole else identify(fields)
    return Entry(entry_id, 1, kept, whole, len(fields), size, named)


#: The field bs1_admit (door.lua) adds to a submission it admitted cut: its whole size.
CUT_FIELD = b"cut"


def as_admitted(entry: Entry) -> Entry:
    """A submission over the bounds is admitted cut (bs1_admit keeps 8 KiB of it and names
    its size, request id and kind), so that no worker ever receives it whole, not even
    when it waits for one entry: read as the cut entry it stands for."""
    fields = entry.fields
    if fields is None or not entry.whole or CUT_FIELD not in fields:
        return entry
    size = int(fields[CUT_FIELD]) if fields[CUT_FIELD].isdigit() else 0
    named = tuple(fields.get(name, b"").decode(errors="replace") for name in (b"id", b"type"))
    kept = {EVENT_FIELD: fields.get(EVENT_FIELD, b"")}
    return Entry(entry.entry_id, entry.deliveries, kept, False, 1, size, (named[0], named[1]))


def bad_shape(entry: Entry) -> str | None:
    """Bounds first: nothing after this scales with a hostile entry's size."""
    if entry.field_count > MAX_FIELDS:
        return f"too_many_fields: {entry.field_count} fields (at most {MAX_FIELDS})"
    if entry.size > MAX_ENTRY_BYTES + 1024 or not entry.whole:
        return f"too_large: {entry.size} bytes (at most {MAX_ENTRY_BYTES})"
    return None
