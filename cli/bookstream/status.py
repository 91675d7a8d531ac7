"""``bookstream status``: the library's totals and the health of its streams."""

from __future__ import annotations

import json
import time

import redis.asyncio as aioredis
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_core.liveness import consumers
from bookstream_core.redis_config import eviction_policy, eviction_problem
from bookstream_core.streams import backlog, waiting
from bookstream_core.types import ServiceName, text
from bookstream_lending.views import LendingView
from bookstream_shelving.views import ShelvingView

from bookstream.render import counted


def _age_ms(entry_id: str | None) -> int | None:
    if not entry_id:
        return None
    return max(0, int(time.time() * 1000) - int(entry_id.split("-")[0]))


async def library_status(r: aioredis.Redis, library: str) -> dict[str, object]:
    keys = LibraryKeys(library)
    lending = await LendingView(r, keys).totals()
    totals = {
        "books_lent": lending.books_lent,
        "borrowers": lending.borrowers,
        "in_storage": lending.in_storage,
        "reserved_for_requests": lending.reserved,
        "being_fetched": lending.being_fetched,
        "off_shelf": await ShelvingView(r, keys).books_off(),
    }
    streams: dict[str, object] = {}
    never_served = []
    for service in SERVICES:
        streams[service] = stream = await stream_status(r, keys, service, keys.inbox(service))
        groups = stream["groups"]
        assert isinstance(groups, list)
        # A worker creates its service's group when it starts: none, no worker ever ran.
        if all(g["name"] != keys.group(service) for g in groups):
            never_served.append(service)
    # Submissions wait in a list until a Lending worker admits them into its inbox.
    lending_stream = streams["lending"]
    assert isinstance(lending_stream, dict)
    lending_stream["submissions_waiting"] = await waiting(r, keys.submissions)
    # Shelving's replies to Lending: a stream of its own, written by Shelving alone.
    streams["lending_replies"] = await stream_status(r, keys, "lending", keys.replies)
    policy = await eviction_policy(r)
    redis_info = {"maxmemory_policy": policy, "problem": eviction_problem(policy)}
    return {
        "library": library,
        "totals": totals,
        "streams": streams,
        "never_served": never_served,
        "redis": redis_info,
    }


async def stream_status(
    r: aioredis.Redis, keys: LibraryKeys, service: ServiceName, inbox: str
) -> dict[str, object]:
    result: dict[str, object] = {
        "stream": inbox,
        "length": int(await r.xlen(inbox)),
        "dead_letters": int(await r.xlen(keys.dead_letters(service))),
        "groups": [],
    }
    if not await r.exists(inbox):
        return result
    groups = []
    for info in await r.xinfo_groups(inbox):
        name = text(info["name"])
        summary = await r.xpending(inbox, name)
        oldest = text(summary.get("min")) if summary.get("pending") else None
        members = await consumers(r, keys, service) if name == keys.group(service) else []
        groups.append(
            {
                "name": name,
                "consumers": [
                    {"name": c.name, "pending": c.pending, "idle_ms": c.idle_ms, "alive": c.alive}
                    for c in members
                ],
                "pending": int(info["pending"]),
                # Entries not yet delivered to the group (not Redis's lag: it can drift).
                "backlog": await backlog(r, inbox, info),
                "last_delivered_id": text(info["last-delivered-id"]),
                "oldest_pending_age_ms": _age_ms(oldest),
            }
        )
    result["groups"] = groups
    return result


def render_status(status: dict[str, object]) -> str:
    lines = [f"library {status['library']}"]
    totals = status["totals"]
    assert isinstance(totals, dict)
    borrowers = counted(int(totals["borrowers"]), "user")
    lines.append(
        "  books lent {books_lent} to {borrowers}; {in_storage} in the automated storage; "
        "{reserved_for_requests} reserved and {being_fetched} being fetched for requests in "
        "flight; "
        "{off_shelf} off the shelves".format(**{**totals, "borrowers": borrowers})
    )
    redis_info = status.get("redis")
    if isinstance(redis_info, dict):
        policy = redis_info["maxmemory_policy"] or "unknown (INFO refused)"
        problem = redis_info["problem"]
        lines.append(
            f"  redis: maxmemory-policy {policy}" + (f"  PROBLEM: {problem}" if problem else "")
        )
    streams = status["streams"]
    assert isinstance(streams, dict)
    for service, s in streams.items():
        waiting = s.get("submissions_waiting")
        # The replies share Lending's dead letters, counted on the lending line.
        replies = service == "lending_replies"
        lines.append(
            f"  {'lending replies' if replies else service}: stream {s['stream']}  "
            f"length {s['length']}"
            + ("" if replies else f"  dead letters {s['dead_letters']}")
            + (f"  submissions waiting {waiting}" if "submissions_waiting" in s else "")
        )
        for g in s["groups"]:
            age = g["oldest_pending_age_ms"]
            lines.append(
                f"    group {_printable(g['name'])}: pending {g['pending']}  "
                f"backlog {g['backlog']}"
                + (f"  oldest pending {age / 1000:.1f}s" if age is not None else "")
            )
            for c in g["consumers"]:
                state = "alive" if c["alive"] else "gone (no lock)"
                lines.append(
                    f"      {_printable(c['name'])}: pending {c['pending']}  "
                    f"idle {c['idle_ms'] / 1000:.1f}s  {state}"
                )
    never = status.get("never_served")
    if never:
        assert isinstance(never, list)
        lines.append(
            f"  hint: no {' or '.join(never)} worker ever served library {status['library']}: "
            "start them with bookstream serve (or bookstream-lending / bookstream-shelving)"
        )
    return "\n".join(lines)


def _printable(name: str) -> str:
    """A consumer name as a terminal may show it: anyone who can XREADGROUP names one,
    so control characters (newlines, escapes) are shown escaped (as an id is), never
    obeyed."""
    return name if name.isprintable() else repr(name)


def to_json(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=False)
