"""``bookstream dead-letters list|show|retry|purge``: inspect and re-inject set-aside entries.

A dead-letter entry keeps the original entry's fields as ``f.<name>``, plus ``stream``,
``entry``, ``reason``, ``deliveries``, ``time``, ``request_id`` and ``kind``. Retrying
writes the original fields back into the service's inbox (as a new entry) and only then,
once Redis has accepted it, deletes the dead letter: a retry refused (memory full, a
stream out of ids) keeps the dead letter. Lending applies a retried request whose id was
answered ``rejected`` (a rejection applied nothing) and replaces the rejection.
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis
from bookstream_core.functions import CoreFunctions
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_core.types import ServiceName, text
from redis.exceptions import ResponseError

from bookstream.errors import Unreachable

FIELD_PREFIX = b"f."


def _describe(service: str, entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, object]:
    original = {
        text(k[len(FIELD_PREFIX) :]): v.decode(errors="replace")
        for k, v in fields.items()
        if k.startswith(FIELD_PREFIX)
    }
    return {
        "id": text(entry_id),
        "service": service,
        "reason": text(fields.get(b"reason")),
        "deliveries": int(fields.get(b"deliveries", b"1")),
        "time_ms": int(fields.get(b"time", b"0")),
        "request_id": text(fields.get(b"request_id")) or None,
        "kind": text(fields.get(b"kind")) or None,
        "stream": text(fields.get(b"stream")),
        "entry": text(fields.get(b"entry")),
        "fields": original,
    }


def _services(service: str | None) -> tuple[ServiceName, ...]:
    return SERVICES if service is None else (cast(ServiceName, service),)


async def list_dead_letters(
    r: aioredis.Redis, library: str, service: str | None = None, count: int = 100
) -> list[dict[str, object]]:
    keys = LibraryKeys(library)
    result: list[dict[str, object]] = []
    for svc in _services(service):
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await r.xrange(keys.dead_letters(svc), count=count),
        )
        result.extend(_describe(svc, entry_id, fields) for entry_id, fields in entries)
    return result


async def show_dead_letter(
    r: aioredis.Redis, library: str, entry_id: str, service: str | None = None
) -> dict[str, object] | None:
    keys = LibraryKeys(library)
    for svc in _services(service):
        found = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await r.xrange(keys.dead_letters(svc), min=entry_id, max=entry_id),
        )
        if found:
            return _describe(svc, found[0][0], found[0][1])
    return None


async def existing(
    r: aioredis.Redis, library: str, ids: list[str], service: str | None = None
) -> list[str]:
    """The ids (each ``ms-seq``) that name a dead letter, in the order given."""
    keys = LibraryKeys(library)
    found = []
    for entry_id in ids:
        for svc in _services(service):
            if await r.xrange(keys.dead_letters(svc), min=entry_id, max=entry_id, count=1):
                found.append(entry_id)
                break
    return found


async def retry_dead_letters(
    r: aioredis.Redis, library: str, ids: list[str] | None, service: str | None = None
) -> list[tuple[str, str]]:
    """Re-inject the given entries (all when ``ids`` is None); returns (old id, new id)."""
    keys = LibraryKeys(library)
    moved = []
    for svc in _services(service):
        dead = keys.dead_letters(svc)
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await r.xrange(dead))
        for entry_id, fields in entries:
            if ids is not None and text(entry_id) not in ids:
                continue
            original = {
                k[len(FIELD_PREFIX) :]: v for k, v in fields.items() if k.startswith(FIELD_PREFIX)
            }
            if not original:
                continue
            # Back where it came from (Lending has two streams), never to a stream the
            # dead letter names but the service does not read. One function call appends
            # and deletes, both or neither (a user refused XDEL used to re-inject a copy
            # at each try).
            came_from = text(fields.get(b"stream", b""))
            stream = came_from if came_from in keys.streams(svc) else keys.inbox(svc)
            try:
                new_id = await CoreFunctions(r).requeue(dead, stream, entry_id, original)
            except ResponseError as exc:
                raise Unreachable(
                    f"Redis refused to re-inject {text(entry_id)} ({exc}); "
                    "the dead letter is kept, retry later"
                ) from None
            if new_id is not None:
                moved.append((text(entry_id), text(new_id)))
    return moved


async def purge_dead_letters(
    r: aioredis.Redis, library: str, ids: list[str] | None, service: str | None = None
) -> int:
    keys = LibraryKeys(library)
    removed = 0
    for svc in _services(service):
        dead = keys.dead_letters(svc)
        if ids is None:
            removed += int(await r.xlen(dead))
            await r.delete(dead)
        else:
            removed += int(await r.xdel(dead, *ids)) if ids else 0
    return removed
