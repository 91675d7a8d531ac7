"""``bookstream status``: the library's totals and the health of its streams."""

from __future__ import annotations

import json
import time

import redis.asyncio as aioredis
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_core.streams import backlog
from bookstream_lending.keys import LendingKeys
from bookstream_shelving.keys import ShelvingKeys


def _s(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


def _age_ms(entry_id: str | None) -> int | None:
    if not entry_id:
        return None
    return max(0, int(time.time() * 1000) - int(entry_id.split("-")[0]))


async def library_status(r: aioredis.Redis, library: str) -> dict[str, object]:
    keys = LibraryKeys(library)
    lk, sk = LendingKeys(keys), ShelvingKeys(keys)
    async with r.pipeline(transaction=True) as pipe:
        pipe.hvals(lk.book_status)
        pipe.scard(lk.storage)
        pipe.scard(lk.borrowers)
        pipe.hlen(sk.off_shelf)
        statuses, in_storage, borrowers, off_shelf = await pipe.execute()
    kinds = [s.split(b":", 1)[0].decode() for s in statuses]
    totals = {
        "books_lent": kinds.count("lent"),
        "borrowers": int(borrowers),
        "in_storage": int(in_storage),
        "held_for_requests": kinds.count("held"),
        "being_fetched": kinds.count("paged"),
        "off_shelf": int(off_shelf),
    }
    streams: dict[str, object] = {}
    for service in SERVICES:
        streams[service] = await stream_status(r, keys, service)
    return {"library": library, "totals": totals, "streams": streams}


async def stream_status(r: aioredis.Redis, keys: LibraryKeys, service: str) -> dict[str, object]:
    inbox = keys.inbox(service)  # type: ignore[arg-type]
    dead = keys.dead_letters(service)  # type: ignore[arg-type]
    result: dict[str, object] = {
        "stream": inbox,
        "length": int(await r.xlen(inbox)),
        "dead_letters": int(await r.xlen(dead)),
        "groups": [],
    }
    if not await r.exists(inbox):
        return result
    groups = []
    for info in await r.xinfo_groups(inbox):
        name = str(_s(info["name"]))
        summary = await r.xpending(inbox, name)
        oldest = _s(summary.get("min")) if summary.get("pending") else None
        consumers = []
        for c in await r.xinfo_consumers(inbox, name):
            cname = str(_s(c["name"]))
            lock = await r.pttl(keys.worker_lock(service, cname))  # type: ignore[arg-type]
            consumers.append(
                {
                    "name": cname,
                    "pending": int(c["pending"]),
                    "idle_ms": int(c["idle"]),
                    # -2: no lock: the worker is gone (or never held the name).
                    "alive": lock > 0,
                }
            )
        groups.append(
            {
                "name": name,
                "consumers": consumers,
                "pending": int(info["pending"]),
                "lag": await backlog(r, inbox, info),
                "last_delivered_id": _s(info["last-delivered-id"]),
                "oldest_pending_age_ms": _age_ms(str(oldest) if oldest else None),
            }
        )
    result["groups"] = groups
    return result


def render_status(status: dict[str, object]) -> str:
    lines = [f"library {status['library']}"]
    totals = status["totals"]
    assert isinstance(totals, dict)
    lines.append(
        "  books lent {books_lent} to {borrowers} users; {in_storage} in the automated storage; "
        "{held_for_requests} held and {being_fetched} being fetched for requests in flight; "
        "{off_shelf} off the shelves".format(**totals)
    )
    streams = status["streams"]
    assert isinstance(streams, dict)
    for service, s in streams.items():
        lines.append(
            f"  {service}: stream {s['stream']}  length {s['length']}  "
            f"dead letters {s['dead_letters']}"
        )
        for g in s["groups"]:
            age = g["oldest_pending_age_ms"]
            lines.append(
                f"    group {g['name']}: pending {g['pending']}  lag {g['lag']}"
                + (f"  oldest pending {age / 1000:.1f}s" if age is not None else "")
            )
            for c in g["consumers"]:
                state = "alive" if c["alive"] else "gone (no lock)"
                lines.append(
                    f"      {c['name']}: pending {c['pending']}  "
                    f"idle {c['idle_ms'] / 1000:.1f}s  {state}"
                )
    return "\n".join(lines)


def to_json(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=False)
