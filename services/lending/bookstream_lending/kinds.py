"""Lending's event kinds, one row each (docs/design.md §7, "Adding an event kind").

lending.lua's ``HANDLERS`` has the same kinds (a test holds the two together); the stream
each kind may arrive on is written into the Lua from here (context.lua's
``STREAM_KINDS``), so a new kind is a row here and a handler there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from bookstream_core.events import (
    EventBase,
    FetchedEvent,
    RequestEvent,
    ReturnEvent,
    UnfetchedEvent,
)
from bookstream_core.functions import lua_set


class LendingKind(NamedTuple):
    event: type[EventBase]
    #: Where it may arrive: the inbox holds what clients submitted (admitted from the
    #: door's list), only Shelving writes the replies. Anywhere else it is a forgery.
    stream: Literal["inbox", "replies"]
    #: The user and books its apply call passes on.
    arguments: Callable[[Any], tuple[str, list[str]]]
    #: The kind of submission its outcome rows decide (a reply decides a request).
    decides: str


KINDS: dict[str, LendingKind] = {
    "request": LendingKind(RequestEvent, "inbox", lambda e: (e.user, e.books), "request"),
    "return": LendingKind(ReturnEvent, "inbox", lambda e: (e.user, e.books), "return"),
    "fetched": LendingKind(FetchedEvent, "replies", lambda e: ("", e.books), "request"),
    "unfetched": LendingKind(UnfetchedEvent, "replies", lambda e: ("", []), "request"),
}

#: What each outcome row decides: the kinds' own, and a request given up at its deadline.
DECIDES = {name: kind.decides for name, kind in KINDS.items()} | {"expired": "request"}


def stream_kinds_lua() -> str:
    """context.lua's STREAM_KINDS, as a Lua table literal."""
    streams: dict[str, list[str]] = {}
    for name, kind in KINDS.items():
        streams.setdefault(kind.stream, []).append(name)
    return "{" + ", ".join(f"{s} = {lua_set(names)}" for s, names in streams.items()) + "}"
