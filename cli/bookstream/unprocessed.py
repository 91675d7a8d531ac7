"""Is a request id still waiting, submitted and not yet admitted, or in the lending inbox
unread or being applied?

An id with no outcome is unknown unless its submission is still ahead of the workers.
The submissions are looked at first, then the inbox: a submission admitted meanwhile is
found in its next place. Only the part of the inbox the group still needs is read (from
its oldest pending entry, or after its last delivered one): trimming keeps that part small.
"""

from __future__ import annotations

from typing import cast

import msgspec
import redis.asyncio as aioredis
from bookstream_core.events import EVENT_FIELD
from bookstream_core.keys import LibraryKeys
from bookstream_core.types import text
from redis.exceptions import ResponseError

#: Past this many unprocessed entries the id is assumed to be among them.
SCAN_LIMIT = 100_000
CHUNK = 1_000

Entries = list[tuple[bytes, dict[bytes, bytes]]]


async def _start(r: aioredis.Redis, keys: LibraryKeys) -> str:
    """The first entry id the lending group still needs ("-": the whole stream)."""
    inbox, group = keys.inbox("lending"), keys.group("lending")
    try:
        groups = await r.xinfo_groups(inbox)
    except ResponseError:
        return "-"  # no stream yet
    for info in groups:
        if text(info["name"]) != group:
            continue
        summary = await r.xpending(inbox, group)
        if summary.get("pending"):
            return text(summary["min"])
        return "(" + text(info["last-delivered-id"])
    return "-"  # no group: no worker ever read it


async def mentions(r: aioredis.Redis, keys: LibraryKeys, request_id: str) -> bool:
    quoted = msgspec.json.encode(request_id)
    if await _submitted(r, keys, request_id, quoted):
        return True
    inbox = keys.inbox("lending")
    start, seen = await _start(r, keys), 0
    while seen < SCAN_LIMIT:
        batch = cast(Entries, await r.xrange(inbox, min=start, count=CHUNK))
        for _, fields in batch:
            payload = fields.get(EVENT_FIELD, b"")
            if quoted in payload and _id_of(payload) == request_id:
                return True
        if len(batch) < CHUNK:
            return False
        seen += len(batch)
        start = "(" + text(batch[-1][0])
    return True


async def _submitted(r: aioredis.Redis, keys: LibraryKeys, request_id: str, quoted: bytes) -> bool:
    # From the newest back, by negative index: admission takes from the head, so no
    # submission still in the list is skipped while we read (one may be read twice).
    seen = 0
    while seen < SCAN_LIMIT:
        try:
            batch = cast(list[bytes], await r.lrange(keys.submissions, -seen - CHUNK, -seen - 1))
        except ResponseError:  # not a list: nothing submitted there
            return False
        if any(quoted in item and _id_of(item) == request_id for item in batch):
            return True
        if len(batch) < CHUNK:
            return False
        seen += len(batch)
    return True


def _id_of(payload: bytes) -> object:
    try:
        event = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    return event.get("id") if isinstance(event, dict) else None
