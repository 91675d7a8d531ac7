"""Lending's own keys (mirrored in lending.lua). Only lending writes them."""

from __future__ import annotations

from dataclasses import dataclass

from bookstream_core.keys import LibraryKeys


@dataclass(frozen=True, slots=True)
class LendingKeys:
    library: LibraryKeys

    @property
    def book_status(self) -> str:
        """Hash book -> storage | held:<request> | paged:<request> | lent:<user>."""
        return f"{self.library.prefix}lending:book"

    @property
    def storage(self) -> str:
        """Set of books in the automated storage."""
        return f"{self.library.prefix}lending:storage"

    @property
    def borrowers(self) -> str:
        """Set of users holding at least one book."""
        return f"{self.library.prefix}lending:borrowers"

    def loans(self, user: str) -> str:
        """Set of books lent to a user."""
        return f"{self.library.prefix}lending:loans:{user}"

    @property
    def in_flight(self) -> str:
        """Sorted set: requests waiting for shelving, by start time (their deadline)."""
        return f"{self.library.prefix}lending:inflight"

    def request(self, request_id: str) -> str:
        """Hash: a request waiting for shelving (user, submitted, held, paged, unavailable)."""
        return f"{self.library.prefix}lending:req:{request_id}"
