"""The shared key contract of one library.

Every key of a library carries the hash tag ``{LIBRARY}`` so that every function call
touches one slot (a Redis Cluster is not supported yet: docs/design.md §3.3). Keys that only one
service reads or writes live in that service's own ``keys.py``; here are the ones that
cross a service boundary (inbox streams, outcomes, dead letters, worker locks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bookstream_core.types import ServiceName

#: Library names end up inside a hash tag, so braces are excluded.
LIBRARY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SERVICES: tuple[ServiceName, ...] = ("lending", "shelving")


class InvalidLibraryName(ValueError):
    pass


def check_library(name: str) -> str:
    if not LIBRARY_RE.fullmatch(name):
        raise InvalidLibraryName(
            f"invalid library name {name!r}: 1-63 characters of letters, digits, '_', '.', '-'"
        )
    return name


@dataclass(frozen=True, slots=True)
class LibraryKeys:
    library: str

    def __post_init__(self) -> None:
        check_library(self.library)

    @property
    def prefix(self) -> str:
        return f"bs:{{{self.library}}}:"

    def inbox(self, service: ServiceName) -> str:
        """The stream a service's work arrives on: Lending's is written only by Lending,
        which admits the clients' submissions into it (bs1_admit); Shelving's only by
        Lending."""
        return f"{self.prefix}{service}:inbox"

    @property
    def submissions(self) -> str:
        """The list clients submit into through the door (bs1_submit, an RPUSH): a client
        may append to it and nothing else, so it cannot trim or rewrite what others
        submitted, as an XADD's MAXLEN or MINID would let it do to a stream."""
        return f"{self.prefix}lending:submissions"

    @property
    def doorbell(self) -> str:
        """The Pub/Sub channel the door rings after each submission: Lending's admission
        waits on it (a ring carries nothing; a forged one only wakes Lending early)."""
        return f"{self.prefix}lending:doorbell"

    @property
    def replies(self) -> str:
        """Shelving's replies to Lending (``fetched``, ``unfetched``). Only Shelving writes
        it, so a client that may submit cannot forge a reply (docs/security.md)."""
        return f"{self.prefix}lending:replies"

    def streams(self, service: ServiceName) -> tuple[str, ...]:
        """Every stream a service consumes, each through a group named after the service."""
        if service == "lending":
            return (self.inbox("lending"), self.replies)
        return (self.inbox(service),)

    def dead_letters(self, service: ServiceName) -> str:
        return f"{self.prefix}{service}:dead"

    @staticmethod
    def group(service: ServiceName) -> str:
        return service

    def outcome(self, request_id: str) -> str:
        """String key holding an outcome; also the Pub/Sub channel it is announced on."""
        return f"{self.prefix}outcome:{request_id}"

    @property
    def domain_events(self) -> str:
        """Bounded stream of every outcome (the library's history)."""
        return f"{self.prefix}events"

    def worker_lock(self, service: ServiceName, name: str) -> str:
        return f"{self.prefix}worker:{service}:{name}"

    @property
    def all_keys_pattern(self) -> str:
        return f"{self.prefix}*"
