"""The benchmark's library on the server: emptied first, preloaded, its progress read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_core.types import text

from bookstream.bench.workload import WorkloadEvent

CHUNK = 2_000


async def empty(r: aioredis.Redis, keys: LibraryKeys) -> int:
    """UNLINK every key of the library (SCAN, never KEYS)."""
    removed = 0
    batch: list[bytes] = []
    async for key in r.scan_iter(match=keys.all_keys_pattern, count=5_000):
        batch.append(key)
        if len(batch) >= 5_000:
            removed += int(await r.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(await r.unlink(*batch))
    return removed


async def preload(r: aioredis.Redis, keys: LibraryKeys, events: Sequence[WorkloadEvent]) -> None:
    """Every event into the submissions list, as the door leaves them (RPUSH, pipelined
    in chunks: the door's checks are the latency mode's to measure), so that the drain
    includes Lending's admission into its inbox, as in use."""
    for start in range(0, len(events), CHUNK):
        chunk = events[start : start + CHUNK]
        await r.rpush(keys.submissions, *(event.payload for event in chunk))


async def create_groups(r: aioredis.Redis, keys: LibraryKeys) -> None:
    """Create every group from the start of its (maybe empty) stream."""
    for service in SERVICES:
        for stream in keys.streams(service):
            await r.xgroup_create(stream, keys.group(service), id="0", mkstream=True)


@dataclass(frozen=True, slots=True)
class DrainState:
    outcomes: int  # outcomes ever appended to the domain events stream
    busy: bool  # a group still has unread or pending entries

    def done(self, expected: int) -> bool:
        return self.outcomes >= expected and not self.busy


async def state(r: aioredis.Redis, keys: LibraryKeys) -> DrainState:
    """Outcomes so far (``entries-added``: the stream is trimmed, XLEN would undercount)."""
    async with r.pipeline(transaction=False) as pipe:
        pipe.execute_command("XINFO", "STREAM", keys.domain_events)
        pipe.execute_command("LLEN", keys.submissions)
        streams = [stream for service in SERVICES for stream in keys.streams(service)]
        for stream in streams:
            pipe.execute_command("XINFO", "STREAM", stream)
            pipe.execute_command("XINFO", "GROUPS", stream)
        replies = await pipe.execute(raise_on_error=False)
    outcomes = _entries_added(replies[0])
    busy = not isinstance(replies[1], Exception) and int(replies[1]) > 0  # not yet admitted
    for i in range(len(streams)):
        stream, groups = replies[2 + 2 * i], replies[3 + 2 * i]
        if isinstance(stream, Exception) or isinstance(groups, Exception):
            continue
        last_id = _field(stream, "last-generated-id")
        for group in cast(list[Any], groups):
            pending = int(_field(group, "pending") or 0)
            # Not Redis's lag: its counter can drift (bookstream_core.streams).
            unread = text(_field(group, "last-delivered-id")) != text(last_id)
            busy = busy or pending > 0 or bool(unread)
    return DrainState(outcomes, busy)


def _entries_added(reply: object) -> int:
    if isinstance(reply, Exception):
        return 0
    return int(_field(reply, "entries-added") or 0)


def _field(reply: object, name: str) -> Any:
    """A field of an XINFO reply, whether redis-py parsed it to a dict or left a list."""
    if isinstance(reply, dict):
        for key in (name, name.encode()):
            if key in reply:
                return reply[key]
        return None
    items = cast(list[Any], reply)
    for k, v in zip(items[::2], items[1::2], strict=True):
        if (k.decode() if isinstance(k, bytes) else k) == name:
            return v
    return None
