"""Loading Redis Functions libraries, and the typed wrapper of the core library.

Each library's source starts with ``#!lua name=<library>_v<N>``: the version is part of
the name, so during a rolling upgrade old and new workers each find their own library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from enum import IntEnum
from importlib import resources
from typing import Any, NamedTuple

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bookstream_core.batch import Batch, parse_batch
from bookstream_core.events import SCHEMA_VERSION, SUBMISSIONS
from bookstream_core.ids import MAX_BOOKS_PER_EVENT, MAX_ID_LENGTH, MAX_REQUEST_ID_LENGTH
from bookstream_core.rejected import MAX_ENTRY_BYTES

_NAME_RE = re.compile(r"^#!lua name=(\S+)")
_CONSTANT_RE = re.compile(r"@([A-Z_]+)@")


def lua_set(names: list[str]) -> str:
    """A Lua table literal with each name a key set to true."""
    return "{" + ", ".join(f"[{json.dumps(name)}] = true" for name in names) + "}"


def lua_constants() -> dict[str, str]:
    """The wire contract's numbers and names as Lua literals, written into the Lua where
    it says ``@NAME@``: each keeps its one definition (events.py, ids.py, rejected.py)."""
    fields = {"type"} | {
        field.encode_name for kind in SUBMISSIONS.values() for field in msgspec.structs.fields(kind)
    }
    return {
        "SCHEMA_VERSION": str(SCHEMA_VERSION),
        "MAX_EVENT_BYTES": str(MAX_ENTRY_BYTES),
        "MAX_BOOKS": str(MAX_BOOKS_PER_EVENT),
        "MAX_ID_CHARS": str(MAX_ID_LENGTH),
        "MAX_REQUEST_ID": str(MAX_REQUEST_ID_LENGTH),
        "SUBMITTED_FIELDS": lua_set(sorted(fields)),
        "SUBMISSION_KINDS": lua_set(list(SUBMISSIONS)),
        "SUBMISSION_KIND_NAMES": json.dumps(" or ".join(SUBMISSIONS)),
    }


class FunctionsUnavailable(RuntimeError):
    """The library is not loaded and this connection may not load it."""


def read_library(
    package: str, filename: str, *parts: str, constants: Mapping[str, str] | None = None
) -> str:
    """One library's source: ``filename``'s name line, the shared prelude
    (bookstream_core/prelude.lua), then ``parts`` (helper files of the same package),
    then the rest of ``filename``. Lua sees one chunk, so each file stays small."""
    files = resources.files(package)
    head, _, body = files.joinpath(filename).read_text(encoding="utf-8").partition("\n")
    pieces = [resources.files("bookstream_core").joinpath("prelude.lua").read_text("utf-8")]
    pieces += [files.joinpath(part).read_text(encoding="utf-8") for part in parts]
    # The package's own tables (``constants``) beside the wire contract's. A name the Lua
    # asks for that has no definition is a bug: KeyError at import.
    given = {**lua_constants(), **(constants or {})}
    return _CONSTANT_RE.sub(lambda m: given[m.group(1)], "\n".join([head, *pieces, body]))


def library_name(source: str) -> str:
    match = _NAME_RE.match(source)
    if match is None:
        raise ValueError("a functions library must start with '#!lua name=...'")
    return match.group(1)


async def load_library(r: aioredis.Redis, source: str) -> str:
    """Make sure this exact library is loaded: nothing to do when it is, else load (or
    replace) it. A role user may not load functions (an admin's ``bookstream setup``
    does): then a missing or different library is FunctionsUnavailable, never a worker
    running against code it was not written for."""
    name = library_name(source)
    if await _loaded_code(r, name) == source:
        return name
    try:
        await r.function_load(source, replace=True)
    except ResponseError as exc:
        if "NOPERM" not in str(exc) and "no permissions" not in str(exc).lower():
            raise
        raise FunctionsUnavailable(
            f"Redis functions library {name} is missing or not this version's, and this "
            "Redis user may not load it: run `bookstream setup` with an admin user"
        ) from exc
    return name


async def _loaded_code(r: aioredis.Redis, name: str) -> str | None:
    """The loaded library's code, None if absent (or if this user may not list it)."""
    try:
        listed = await r.function_list(library=name, withcode=True)
    except ResponseError:
        return None
    for library in listed:
        info = {_text(k): v for k, v in _pairs(library)}
        if _text(info.get("library_name", b"")) == name:
            code = info.get("library_code")
            return None if code is None else _text(code)
    return None


def _pairs(reply: object) -> list[tuple[object, object]]:
    """A FUNCTION LIST entry, whether redis-py parsed it to a dict or left a flat list."""
    if isinstance(reply, dict):
        return list(reply.items())
    assert isinstance(reply, list)
    return list(zip(reply[::2], reply[1::2], strict=True))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DeadLetterRow(NamedTuple):
    """One entry as bs1_dead_letter takes it (its ARGV slots, in this order)."""

    entry_id: bytes | str
    reason: str
    deliveries: int
    #: The request id and kind it names ('' if none: nobody to answer).
    request_id: str
    kind: str
    #: A key whose existence means the request is in flight ('' if none).
    guard: str
    #: events.submission_digest of its ``e`` field ('' if Redis cut it, or it has none).
    digest: str
    #: The entry's own field count (``fields`` may be fewer).
    field_count: int
    #: At most 16 of its (field, value) pairs, each bounded: what the dead letter keeps.
    fields: list[tuple[bytes, bytes]]


class SetAside(IntEnum):
    """What bs1_dead_letter did with one row."""

    SKIPPED = -1  # no longer pending: another worker applied it or set it aside
    KEPT = 0  # set aside, nobody answered
    ANSWERED = 1  # set aside, and its client answered `rejected`
    REPORTED = 2  # set aside, and Lending told its fetch failed (`unfetched`)


class HandOver(IntEnum):
    """What one bs1_hand_over call did (core.lua)."""

    RETIRED = 0  # the consumer held nothing any more: deleted, its name marked retired
    ALIVE = 1  # its worker still holds its lock (draining): nothing touched
    MOVED = 2  # some entries moved to the survivor, some still pending: call again
    NO_GROUP = 3  # no such stream or group


class HandedOver(NamedTuple):
    code: HandOver
    #: Entries moved to the survivor by this call.
    moved: int
    #: Entries still pending on the removed consumer (MOVED), -1 when not looked at.
    remaining: int


class CoreFunctions:
    """Typed calls into ``bookstream_core_v1`` (see core.lua for each function's contract)."""

    source = read_library("bookstream_core", "core.lua")

    def __init__(self, r: aioredis.Redis) -> None:
        self._r = r

    async def load(self) -> None:
        await load_library(self._r, self.source)

    async def dead_letter(
        self,
        stream: str,
        dead: str,
        events: str,
        replies: str | None,
        *,
        group: str,
        retention_s: int,
        maxlen: int,
        outcome_prefix: str,
        schema_version: int,
        rows: Sequence[DeadLetterRow],
    ) -> list[SetAside]:
        """What became of each row (core.lua): ``replies`` is given for Shelving's entries,
        where a failed fetch is reported."""
        args: list[bytes | str | int] = [
            group,
            retention_s,
            maxlen,
            outcome_prefix,
            schema_version,
        ]
        for *facts, fields in rows:
            args.extend(facts)
            args.append(len(fields))
            for name, value in fields:
                args.extend((name, value))
        keys = [stream, dead, events] + ([replies] if replies else [])
        result = await self._r.fcall("bs1_dead_letter", len(keys), *keys, *args)
        return [SetAside(int(flag)) for flag in result]

    async def requeue(
        self, dead: str, stream: str, entry_id: bytes | str, fields: dict[bytes, bytes]
    ) -> bytes | None:
        """Move a dead letter's fields back to ``stream`` (core.lua: both or neither);
        the new entry's id, or None when the dead letter is gone."""
        flat = [part for pair in fields.items() for part in pair]
        new_id: bytes | None = await self._r.fcall("bs1_requeue", 2, dead, stream, entry_id, *flat)
        return new_id

    async def read(
        self,
        inbox: str,
        *,
        group: str,
        consumer: str,
        mode: str,
        count: int,
        max_fields: int,
        max_bytes: int,
        min_idle_ms: int = 0,
        start: str = "0-0",
    ) -> Batch:
        """Take a batch (mode ``new``, ``own`` or ``claim``), each entry bounded by Redis."""
        args: list[str | int] = [group, consumer, mode, count, max_fields, max_bytes]
        if mode == "claim":
            args += [min_idle_ms, start]
        return parse_batch(await self._r.fcall("bs1_read", 1, inbox, *args))

    async def lock_acquire(self, key: str, value: str, ttl_ms: int, force: bool) -> bytes | None:
        """None when acquired, else the current holder's description."""
        result = await self._r.fcall("bs1_lock_acquire", 1, key, value, ttl_ms, int(force))
        return None if int(result[0]) == 1 else result[1]

    async def lock_renew(self, key: str, value: str, ttl_ms: int) -> bool:
        return int(await self._r.fcall("bs1_lock_renew", 1, key, value, ttl_ms)) == 1

    async def lock_release(self, key: str, value: str) -> bool:
        return int(await self._r.fcall("bs1_lock_release", 1, key, value)) == 1

    async def retire_consumer(
        self, stream: str, lock: str, *, group: str, consumer: str, min_idle_ms: int
    ) -> bool:
        """Delete the consumer if it is gone and holds nothing (atomically)."""
        result = await self._r.fcall(
            "bs1_retire_consumer", 2, stream, lock, group, consumer, min_idle_ms
        )
        return int(result) == 1

    async def trim(self, stream: str) -> int:
        return int(await self._r.fcall("bs1_trim", 1, stream))

    async def hand_over(
        self, stream: str, lock: str, *, group: str, consumer: str, survivor: str, batch: int
    ) -> HandedOver:
        """Move up to ``batch`` of a removed consumer's pending entries to ``survivor`` and
        delete it once it holds none. A code core.lua does not name raises ValueError."""
        args = (group, consumer, survivor, batch)
        result = await self._call_set_up("bs1_hand_over", [stream, lock], *args)
        code, moved, remaining = (int(x) for x in result)
        return HandedOver(HandOver(code), moved, remaining)

    async def compare_and_set(self, key: str, expected: str, value: str) -> bool:
        """Set ``key`` to ``value`` if it still holds ``expected``."""
        return int(await self._call_set_up("bs1_compare_and_set", [key], expected, value)) == 1

    async def _call_set_up(self, function: str, keys: list[str], *args: str | int) -> Any:
        """FCALL for a caller that may not load functions (the operator; workers load
        theirs): a missing one is FunctionsUnavailable naming ``bookstream setup``."""
        try:
            return await self._r.fcall(function, len(keys), *keys, *args)
        except ResponseError as exc:
            if "Function not found" not in str(exc):
                raise
            library = keys[0].split("{", 1)[-1].split("}", 1)[0]  # bs:{LIBRARY}:...
            raise FunctionsUnavailable(
                f"Redis has no function {function} (library {library_name(self.source)}): "
                f"run `bookstream setup --library {library}` with an admin user (this Redis "
                "user may not load functions)"
            ) from exc
