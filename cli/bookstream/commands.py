"""The inspection commands: status, info, audit, embedded."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import redis.asyncio as aioredis
from bookstream_core.config import domain_settings_from, redis_settings_from
from bookstream_core.embedded import EmbeddedRedis
from bookstream_core.events import SCHEMA_VERSION
from bookstream_core.ids import MAX_BOOKS_PER_EVENT, MAX_ID_LENGTH, MAX_REQUEST_ID_LENGTH
from bookstream_core.keys import SERVICES, LibraryKeys

from bookstream.audit import audit
from bookstream.client import AsyncClient
from bookstream.contract import contract
from bookstream.errors import BadInput, report_warning
from bookstream.render import books, counted, render_audit
from bookstream.status import library_status, render_status, to_json


async def status_command(client: AsyncClient, args: argparse.Namespace) -> int:
    async with client:
        with client.redis_errors():
            if args.borrower is not None:
                if not args.borrower:
                    raise BadInput("--borrower: the user id must not be empty")
                held = await client.user_books(args.borrower)
                if args.json:
                    print(to_json({"user": args.borrower, "books": held}))
                else:
                    print(f"{args.borrower!r} holds {counted(len(held), 'book')}: {books(held)}")
            if args.book:
                where = await client.locate(args.book)
                if args.json:
                    print(to_json(_struct(where)))
                else:
                    print(f"{args.book!r}: {where.describe()}")
            if args.borrower is None and not args.book:
                status = await library_status(await client.redis(), client.library)
                print(to_json(status) if args.json else render_status(status))
    return 0


def _struct(value: object) -> dict[str, object]:
    import msgspec

    result: dict[str, object] = msgspec.to_builtins(value)
    return result


def info(library: str) -> dict[str, object]:
    keys = LibraryKeys(library)
    wire = contract(library)
    outcome = wire["outcome"]
    assert isinstance(outcome, dict)
    return {
        "library": library,
        "schema_version": SCHEMA_VERSION,
        "event_field": "e",
        "streams": {
            service: {
                "inbox": keys.inbox(service),
                # Lending also reads Shelving's replies, a stream only Shelving writes.
                **({"replies": keys.replies} if service == "lending" else {}),
                "group": keys.group(service),
                "dead_letters": keys.dead_letters(service),
            }
            for service in SERVICES
        },
        "producer": {
            # The door validates the event, refuses an id Lending recorded for another user
            # and appends it to the submissions list, which Lending admits into its inbox
            # (entries {"e": event}); a raw RPUSH skips the checks.
            "submit": f"FCALL bs1_submit 1 {keys.submissions} '<JSON event>'",
            "submissions": keys.submissions,
            "refusals": {
                "BSBAD": "the event is invalid (the message says why); nothing was written",
                "BSTAKEN": "the request id was used by another user, for another kind or for "
                "other books",
                "BSENV": "Redis's trouble (a key of the wrong type, a missing right): retry",
            },
            "entry": {"e": "<JSON event>"},
            # Made from the structs of events.py (contract.py): every field, optional
            # ones included; each example is accepted by the door and the workers.
            "events": wire["events"],
            "schemas": wire["schemas"],
            "limits": {
                "request_id": (
                    f"1-{MAX_REQUEST_ID_LENGTH} of [A-Za-z0-9_.:-], starting with a letter or digit"
                ),
                "user_and_book_ids": (
                    f"1-{MAX_ID_LENGTH} characters of UTF-8, no control characters, no white "
                    "space at either end"
                ),
                "books_per_event": MAX_BOOKS_PER_EVENT,
            },
        },
        "outcomes": {
            "key": keys.outcome("<request id>"),
            "channel": keys.outcome("<request id>"),
            "note": "SUBSCRIBE to the channel, then GET the key, then submit",
            **outcome,
        },
        "domain_events": keys.domain_events,
        "functions_libraries": list(function_sources()),
    }


def function_sources() -> dict[str, str]:
    """Each Redis Functions library as it is loaded (a file plus the shared prelude and
    its parts, joined by read_library), by library name."""
    from bookstream_core.functions import CoreFunctions, library_name
    from bookstream_lending.functions import SOURCE as LENDING
    from bookstream_shelving.functions import SOURCE as SHELVING

    return {library_name(src): src for src in (CoreFunctions.source, LENDING, SHELVING)}


def functions_command(name: str | None) -> int:
    """Workers load their functions at start; under an ACL user without FUNCTION LOAD an
    admin loads them once. The sources go to stdout, to be piped: no file is left behind."""
    sources = function_sources()
    if name is not None:
        if name not in sources:
            raise BadInput(f"no functions library {name!r} (one of: {', '.join(sources)})")
        sys.stdout.write(sources[name])
        return 0
    print("Redis Functions libraries (workers load them at start when they may); as an admin:")
    for library in sources:
        print(f"  bookstream info --function {library} | redis-cli -x FUNCTION LOAD REPLACE")
    return 0


def info_command(
    library: str, as_json: bool, functions: bool = False, function: str | None = None
) -> int:
    if functions or function is not None:
        if as_json:  # it was ignored: the sources are Lua to pipe, the list plain lines
            raise BadInput(
                "--json goes with neither --functions nor --function (info --json lists the "
                "libraries as functions_libraries)"
            )
        return functions_command(function)
    data = info(library)
    if as_json:
        print(to_json(data))
        return 0
    streams = data["streams"]
    assert isinstance(streams, dict)
    print(f"library {library}, event schema version {SCHEMA_VERSION}")
    for service, s in streams.items():
        replies = f", replies {s['replies']}" if "replies" in s else ""
        print(
            f"  {service}: inbox {s['inbox']}{replies} (group {s['group']}), "
            f"dead letters {s['dead_letters']}"
        )
    print(f"  outcomes: key/channel {LibraryKeys(library).outcome('<request id>')}")
    print(f"  submit through the door: {data['producer']['submit']}")  # type: ignore[index]
    print("  (--json for the event schema, --functions for the Redis Functions libraries)")
    return 0


async def audit_command(client: AsyncClient, args: argparse.Namespace) -> int:
    domain = domain_settings_from(args, os.environ)
    async with client:
        with client.redis_errors():
            report = await audit(
                await client.redis(),
                client.library,
                user_limit=domain.user_limit,
                storage_capacity=domain.storage_capacity,
            )
    if args.json:
        print(to_json(report.to_dict()))
    else:
        print(render_audit(report))
    return 0 if report.ok else 1


def embedded_command(args: argparse.Namespace) -> int:
    settings = redis_settings_from(None, os.environ)
    server = EmbeddedRedis(settings.home, settings.appendfsync)
    if args.action == "start":
        print(f"embedded Redis running at {server.ensure()}")
        return 0
    if args.action == "stop":
        print("stopped" if server.stop() else "not running")
        return 0
    pid = server.running_pid()
    running = pid is not None
    if args.json:
        state: dict[str, object] = {"running": running, "directory": str(server.directory)}
        if running:
            state |= {"url": server.url, "pid": pid}
        print(json.dumps(state))
    elif running:
        print(f"embedded Redis running at {server.url} (pid {pid})")
    else:
        print(f"embedded Redis not running (its directory: {server.directory})")
    return 0 if running else 3


#: A stream entry id as XADD makes them (``ms-seq``), or its time part alone.
ENTRY_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")


def _entry_ids(ids: list[str]) -> list[str]:
    """Each id whole: a time alone is its first entry's (``ms-0``), as XDEL reads it."""
    for entry_id in ids:
        if not ENTRY_ID.fullmatch(entry_id):
            raise BadInput(f"{entry_id!r} is not a dead-letter entry id (like 1700000000000-0)")
    return [entry_id if "-" in entry_id else f"{entry_id}-0" for entry_id in ids]


async def _named(r: aioredis.Redis, library: str, ids: list[str], service: str | None) -> list[str]:
    """The named ids that are dead letters: none is a mistake (exit 2, as ``show``'s),
    some are done, and the others named."""
    from bookstream import deadletters as dl

    found = await dl.existing(r, library, ids, service)
    missing = ", ".join(i for i in dict.fromkeys(ids) if i not in found)
    if not found:
        raise BadInput(f"no dead letter {missing}")
    if missing:
        report_warning(f"no dead letter {missing}: left out")
    return found


def _id(request_id: object) -> str:
    """A dead letter's request id (anything its producer wrote, or none)."""
    return "-" if request_id is None else repr(request_id)


def _render_dead_letter(entry: dict[str, object]) -> str:
    deliveries = entry["deliveries"]
    assert isinstance(deliveries, int)
    lines = [
        f"dead letter {entry['id']} ({entry['service']}): {entry['reason']}",
        f"  entry {entry['entry']} of {entry['stream']}, delivered {counted(deliveries, 'time')}",
        f"  request {_id(entry['request_id'])} ({entry['kind'] or '-'})",
    ]
    fields = entry["fields"]
    assert isinstance(fields, dict)
    lines += [f"  {name}: {value}" for name, value in fields.items()]
    return "\n".join(lines)


async def dead_letters_command(client: AsyncClient, args: argparse.Namespace) -> int:
    from bookstream import deadletters as dl

    action: str = args.action
    every = getattr(args, "all", False)
    if action in ("retry", "purge") and not args.ids and not every:
        raise BadInput(f"dead-letters {action}: name entry ids or give --all")
    if every and args.ids:  # ids and --all did everything, the ids ignored
        raise BadInput(f"dead-letters {action}: name entry ids or give --all, not both")
    ids = None if every else _entry_ids(list(getattr(args, "ids", [])))
    async with client:
        with client.redis_errors():
            r = await client.redis()
            if action in ("retry", "purge") and ids is not None:
                ids = await _named(r, client.library, ids, args.service)
            if action == "list":
                entries = await dl.list_dead_letters(r, client.library, args.service, args.count)
                if args.json:
                    print(to_json(entries))
                for e in [] if args.json else entries:
                    print(
                        f"{e['id']}  {e['service']}  deliveries {e['deliveries']}  "
                        f"request {_id(e['request_id'])}  {e['reason']}"
                    )
                if not entries and not args.json:
                    print("no dead letters")
                return 0
            if action == "show":
                entry = await dl.show_dead_letter(r, client.library, args.ids[0], args.service)
                if entry is None:
                    raise BadInput(f"no dead letter {args.ids[0]}")
                if args.json:
                    print(to_json(entry))
                else:
                    print(_render_dead_letter(entry))
                return 0
            if action == "retry":
                moved = await dl.retry_dead_letters(r, client.library, ids, args.service)
                if args.json:
                    print(to_json([{"id": old, "new_id": new} for old, new in moved]))
                else:
                    for old, new in moved:
                        print(f"{old} re-injected as {new}")
                    print(f"{len(moved)} re-injected")
                return 0
            removed = await dl.purge_dead_letters(r, client.library, ids, args.service)
            print(to_json({"purged": removed}) if args.json else f"{removed} purged")
            return 0
