"""``bookstream audit``: check the invariants of design.md §4 on a quiescent library.

1. Every book is in exactly one place: shelf, automated storage, or lent to one user.
2. Each user's count equals the books lent to them, and is at most the limit.
3. The automated storage holds at most its capacity.
4. Shelving's off-shelf set equals automated storage ∪ lent books (each counted once).
5. No reservation or temporary key is left over; no group has pending entries, and no
   inbox holds entries its service's group has not read (or that no group exists to read).
6. Every request id has one outcome; replaying the outcomes in order from an empty
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
from bookstream_core.streams import backlog
from bookstream_core.types import text
from bookstream_lending.keys import LendingKeys
from bookstream_shelving.keys import ShelvingKeys


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


#: Lending's statuses besides ``storage``: reserved for a request, or lent to a user.
STATUS_PREFIXES = ("held:", "paged:", "lent:")


async def _typed(r: aioredis.Redis, key: str, expected: str, v: list[str]) -> bool:
    """Whether ``key`` is absent or of the ``expected`` type; a violation if not."""
    kind = text(await r.type(key))
    if kind in ("none", expected):
        return True
    v.append(f"key {key!r} holds a {kind}, not a {expected}")
    return False


async def _scan(r: aioredis.Redis, pattern: str) -> list[bytes]:
    return [key async for key in r.scan_iter(match=pattern, count=1000)]


async def audit(
    r: aioredis.Redis, library: str, *, user_limit: int = 5, storage_capacity: int = 20
) -> AuditReport:
    keys = LibraryKeys(library)
    lk, sk = LendingKeys(keys), ShelvingKeys(keys)
    report = AuditReport(library)
    v = report.violations

    # A key of the wrong type (written by something else) is reported and read as empty.
    status: dict[str, str] = {}
    if await _typed(r, lk.book_status, "hash", v):
        status = {text(k): text(s) for k, s in (await r.hgetall(lk.book_status)).items()}
    storage: set[str] = set()
    if await _typed(r, lk.storage, "set", v):
        storage = {text(b) for b in await r.smembers(lk.storage)}
    borrowers: set[str] = set()
    if await _typed(r, lk.borrowers, "set", v):
        borrowers = {text(u) for u in await r.smembers(lk.borrowers)}
    off: dict[str, str] = {}  # counts as stored: anything but "1" is a violation
    if await _typed(r, sk.off_shelf, "hash", v):
        off = {text(k): text(n) for k, n in (await r.hgetall(sk.off_shelf)).items()}
    loans: dict[str, set[str]] = {}
    loans_prefix = lk.loans("")
    for key in await _scan(r, loans_prefix + "*"):
        user = text(key)[len(loans_prefix) :]
        if await _typed(r, text(key), "set", v):
            loans[user] = {text(b) for b in await r.smembers(key)}

    # 1 and 2: the per-book status and the per-user sets describe the same loans.
    lent_by_status = {b: s[5:] for b, s in status.items() if s.startswith("lent:")}
    owners: Counter[str] = Counter()
    for user, books in loans.items():
        for book in books:
            owners[book] += 1
            if lent_by_status.get(book) != user:
                v.append(
                    f"book {book!r} is in {user!r}'s loans but its status is {status.get(book)!r}"
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
        if status.get(book) != "storage":
            v.append(
                f"book {book!r} is in the automated storage but its status is {status.get(book)!r}"
            )
        if book in lent_by_status:
            v.append(f"book {book!r} is both in the automated storage and lent")
    for book, s in status.items():
        if s == "storage" and book not in storage:
            v.append(f"book {book!r} has status storage but is not in the automated storage")
        elif s != "storage" and not s.startswith(STATUS_PREFIXES):
            # Neither on the shelf (lending has a record), in storage, lent nor reserved.
            v.append(f"book {book!r} has an unknown status {s!r}")

    # 3
    if len(storage) > storage_capacity:
        v.append(
            f"the automated storage holds {len(storage)} books, "
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
        if s.startswith(("held:", "paged:")):
            v.append(f"book {book!r} is still reserved ({s})")
    for key in await _scan(r, lk.request_pattern):
        v.append(f"request state {key.decode()!r} is left over")
    for service in SERVICES:
        inbox = keys.inbox(service)
        if not await r.exists(inbox) or not await _typed(r, inbox, "stream", v):
            continue
        groups = await r.xinfo_groups(inbox)
        if keys.group(service) not in {text(g["name"]) for g in groups}:
            # No worker ever served this library (the group is made by the first one):
            # whatever the stream holds, nothing has read it.
            length = await r.xlen(inbox)
            if length:
                v.append(
                    f"{inbox} holds {length} entries that no group {keys.group(service)!r} has read"
                )
        for group in groups:
            name = group["name"].decode()
            if int(group["pending"]):
                v.append(f"group {name!r} on {inbox} has {group['pending']} pending entries")
            lag = await backlog(r, inbox, group)
            if lag != 0:
                v.append(f"group {name!r} on {inbox} has {lag} entries not yet read")

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
    if not await _typed(r, stream, "stream", v):
        return
    if not await r.exists(stream):
        if any(loans.values()):
            report.notes.append("no domain events recorded: outcome replay skipped")
        return
    info = await r.xinfo_stream(stream)
    complete = int(info.get("entries-added", 0)) == int(info["length"])
    seen: set[str] = set()
    held: dict[str, str] = {}
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
            if outcome.request_id in seen:
                v.append(f"request {outcome.request_id} has more than one outcome")
            seen.add(outcome.request_id)
            if not complete:
                continue
            if outcome.status == "accepted":
                for book in outcome.lent:
                    if book in held:
                        v.append(
                            f"request {outcome.request_id} lent {book!r} to {outcome.user!r} "
                            f"while {held[book]!r} held it"
                        )
                    held[book] = outcome.user
            elif outcome.status == "processed":
                for book in outcome.returned:
                    if held.get(book) != outcome.user:
                        v.append(
                            f"return {outcome.request_id} took back {book!r}, "
                            f"not lent to {outcome.user!r}"
                        )
                    held.pop(book, None)
        last = batch[-1][0].decode()
    if not complete:
        report.notes.append(
            "the domain event stream was trimmed: loans not replayed from the start"
        )
        return
    replayed: dict[str, set[str]] = {}
    for book, user in held.items():
        replayed.setdefault(user, set()).add(book)
    current = {u: b for u, b in loans.items() if b}
    if replayed != current:
        for user in sorted(set(replayed) | set(current))[:20]:
            if replayed.get(user, set()) != current.get(user, set()):
                v.append(
                    f"user {user!r}: outcomes add up to {sorted(replayed.get(user, set()))} "
                    f"but the loans are {sorted(current.get(user, set()))}"
                )
