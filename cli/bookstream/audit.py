"""``bookstream audit``: check the invariants of docs/design.md §4 on a quiescent library.

1. Every book is in exactly one place: shelf, automated storage, or lent to one user.
2. Each user's count equals the books lent to them, and is at most the limit.
3. The automated storage holds at most its capacity.
4. Shelving's off-shelf set equals automated storage ∪ lent books (each counted once).
5. No reservation or request in flight is left over; no inbox has pending or unread
   entries (an inbox nobody ever read included), no submission waits to be admitted.
Keys of the wrong type and statuses lending has no meaning for are violations too.
6. Every request id has one outcome (a ``rejected`` one may be followed by the outcome of
   a valid event with its id, which replaces it); replaying the outcomes in order from an empty
   library lends no book twice and ends with exactly today's loans.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import msgspec
import redis.asyncio as aioredis
from bookstream_core.events import decode_outcome
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_core.keytypes import typed
from bookstream_core.redis_config import eviction_policy, eviction_problem
from bookstream_core.streams import backlog
from bookstream_core.types import text
from bookstream_lending.views import BookStatus, LendingView
from bookstream_shelving.views import ShelvingView

from bookstream.render import counted


@dataclass
class AuditReport:
    library: str
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    books_lent: int = 0
    borrowers: int = 0
    in_storage: int = 0
    outcomes_replayed: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, object]:
        return {
            "library": self.library,
            "ok": self.ok,
            "violations": self.violations,
            "notes": self.notes,
            "books_lent": self.books_lent,
            "borrowers": self.borrowers,
            "in_storage": self.in_storage,
            "outcomes_replayed": self.outcomes_replayed,
        }


def _record(status: BookStatus | None) -> str:
    """Lending's record of a book, in words."""
    if status is None:
        return "no record (on the shelves)"
    who = status.user or status.request_id
    return f"{status.kind} ({who!r})" if who is not None else status.kind


KNOWN_KINDS = ("storage", "reserved", "paged", "lent")


async def audit(
    r: aioredis.Redis, library: str, *, user_limit: int = 5, storage_capacity: int = 20
) -> AuditReport:
    keys = LibraryKeys(library)
    report = AuditReport(library)
    v = report.violations

    lending = await LendingView(r, keys).snapshot(v)
    status, storage, borrowers, loans = (
        lending.books,
        lending.storage,
        lending.borrowers,
        lending.loans,
    )
    off = await ShelvingView(r, keys).off_counts(v)

    # 1 and 2: the per-book status and the per-user sets describe the same loans.
    lent_by_status = {b: s.user or "" for b, s in status.items() if s.kind == "lent"}
    owners: Counter[str] = Counter()
    for user, books in loans.items():
        for book in books:
            owners[book] += 1
            if lent_by_status.get(book) != user:
                v.append(
                    f"book {book!r} is among the loans of user {user!r} but Lending's record "
                    f"of it is {_record(status.get(book))}"
                )
        if len(books) > user_limit:
            v.append(f"user {user!r} holds {len(books)} books, over the limit of {user_limit}")
        if books and user not in borrowers:
            v.append(f"user {user!r} holds books but is not in the borrowers set")
    for book, n in owners.items():
        if n > 1:
            v.append(f"book {book!r} is lent to {n} users")
    for book, user in lent_by_status.items():
        if book not in loans.get(user, set()):
            v.append(f"book {book!r} is marked lent to {user!r} but missing from their loans")
    for user in borrowers:
        if not loans.get(user):
            v.append(f"user {user!r} is in the borrowers set but holds nothing")
    for book in storage:
        if status.get(book) != BookStatus("storage"):
            v.append(
                f"book {book!r} is in the automated storage but Lending's record of it is "
                f"{_record(status.get(book))}"
            )
        if book in lent_by_status:
            v.append(f"book {book!r} is both in the automated storage and lent")
    for book, s in status.items():
        if s.kind == "storage" and book not in storage:
            v.append(f"book {book!r} has status storage but is not in the automated storage")
        elif s.kind not in KNOWN_KINDS:
            # Neither on the shelf (lending has a record), in storage, lent nor reserved.
            v.append(f"book {book!r} has an unknown status {s.kind!r}")

    # 3
    if len(storage) > storage_capacity:
        v.append(
            f"the automated storage holds {counted(len(storage), 'book')}, "
            f"over its capacity of {storage_capacity}"
        )

    # 4: what shelving counts off the shelf is exactly what lending holds.
    with_lending = storage | set(lent_by_status)
    for book, times in off.items():
        if times != "1":
            v.append(f"shelving counts book {book!r} off the shelf {times} times")
    if set(off) != with_lending:
        for book in sorted(set(off) - with_lending)[:20]:
            v.append(f"shelving has book {book!r} off the shelf but lending does not hold it")
        for book in sorted(with_lending - set(off))[:20]:
            v.append(f"lending holds book {book!r} but shelving has it on the shelf")

    # 5: nothing in flight.
    for book, s in status.items():
        if s.kind in ("reserved", "paged"):
            v.append(f"book {book!r} is still {s.kind} for request {s.request_id!r}")
    for request_id in lending.requests_in_flight:
        v.append(f"request {request_id!r} is still in flight (waiting for Shelving)")
    if (
        await r.exists(keys.submissions)
        and await typed(r, keys.submissions, "list", v)
        and (waiting := int(await r.llen(keys.submissions)))
    ):
        v.append(
            f"{keys.submissions} holds {counted(waiting, 'submission')} no lending worker "
            "has admitted yet: start one (bookstream serve) or wait for it"
        )
    served: set[str] = set()
    for service, inbox in ((s, stream) for s in SERVICES for stream in keys.streams(s)):
        if not await r.exists(inbox) or not await typed(r, inbox, "stream", v):
            continue
        groups = await r.xinfo_groups(inbox)
        if keys.group(service) in {text(g["name"]) for g in groups}:
            served.add(service)
        if keys.group(service) not in {text(g["name"]) for g in groups} and (
            length := int(await r.xlen(inbox))
        ):
            # The group is made by the first worker: whatever the stream holds, no worker
            # of this library ever read it.
            v.append(
                f"{inbox} holds {counted(length, 'entry', 'entries')} but no {service} worker "
                "ever read it "
                f"(no group {keys.group(service)!r}): start one (bookstream serve)"
            )
        for group in groups:
            name = group["name"].decode()
            if int(group["pending"]):
                pending = counted(int(group["pending"]), "pending entry", "pending entries")
                v.append(f"group {name!r} on {inbox} has {pending}")
            lag = await backlog(r, inbox, group)
            if lag != 0:
                unread = f"{counted(lag, 'entry', 'entries')}" if lag is not None else "entries"
                v.append(f"group {name!r} on {inbox} has {unread} not yet read")

    if never := [s for s in SERVICES if s not in served]:
        # An OK over nothing: a mistyped --library reads a library nobody ever used.
        report.notes.append(
            f"no {' or '.join(never)} worker ever served library {library!r}: is that the "
            "library's name?"
        )

    # The library's records survive only if Redis never evicts them.
    if (problem := eviction_problem(await eviction_policy(r))) is not None:
        v.append(problem)

    # 6: replay the domain events.
    await _replay(r, keys, loans, report)

    report.books_lent = len(lent_by_status)
    report.borrowers = len(borrowers)
    report.in_storage = len(storage)
    return report


async def _replay(
    r: aioredis.Redis, keys: LibraryKeys, loans: dict[str, set[str]], report: AuditReport
) -> None:
    v = report.violations
    stream = keys.domain_events
    if not await typed(r, stream, "stream", v):
        return
    if not await r.exists(stream):
        if any(loans.values()):
            report.notes.append("no domain events recorded: outcome replay skipped")
        return
    info = await r.xinfo_stream(stream)
    complete = int(info.get("entries-added", 0)) == int(info["length"])
    seen: dict[str, str] = {}  # request id -> the status of its outcome so far
    lent_to: dict[str, str] = {}
    last = "-"
    while True:
        batch = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await r.xrange(stream, min=last, count=5000)
        )
        if last != "-":
            batch = batch[1:]
        if not batch:
            break
        for entry_id, fields in batch:
            try:
                outcome = decode_outcome(fields[b"e"])
            except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                v.append(f"domain event {entry_id.decode()} is not an outcome")
                continue
            report.outcomes_replayed += 1
            # A rejection applied nothing: a valid event with its id may replace it, once.
            before = seen.get(outcome.request_id)
            if before is not None and (before != "rejected" or outcome.status == "rejected"):
                v.append(f"request {outcome.request_id!r} has more than one outcome")
            seen[outcome.request_id] = outcome.status
            if not complete:
                continue
            if outcome.status == "accepted":
                for book in outcome.lent:
                    if book in lent_to:
                        v.append(
                            f"request {outcome.request_id!r} lent {book!r} to {outcome.user!r} "
                            f"while {lent_to[book]!r} held it"
                        )
                    lent_to[book] = outcome.user
            elif outcome.status == "processed":
                for book in outcome.returned:
                    if lent_to.get(book) != outcome.user:
                        v.append(
                            f"return {outcome.request_id!r} took back {book!r}, "
                            f"not lent to {outcome.user!r}"
                        )
                    lent_to.pop(book, None)
        last = batch[-1][0].decode()
    if not complete:
        report.notes.append(
            "the domain event stream was trimmed: loans not replayed from the start"
        )
        return
    replayed: dict[str, set[str]] = {}
    for book, user in lent_to.items():
        replayed.setdefault(user, set()).add(book)
    current = {u: b for u, b in loans.items() if b}
    if replayed != current:
        for user in sorted(set(replayed) | set(current))[:20]:
            if replayed.get(user, set()) != current.get(user, set()):
                v.append(
                    f"user {user!r}: outcomes add up to {sorted(replayed.get(user, set()))} "
                    f"but the loans are {sorted(current.get(user, set()))}"
                )
