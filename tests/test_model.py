"""Property-based: random sequences of requests and returns, driven one at a time through
real worker processes (two of each service), compared outcome by outcome with a small
pure-Python model of docs/design.md §1, then audited.

How examples are kept apart. Starting workers costs about a second each, so one
redis-server and one set of workers (one library, ``main``) serve every example. Between
examples the library is brought back to an empty state: once every stream is drained
(nothing is in flight, no reservation exists), the domain state keys of lending (book
statuses, automated storage, borrowers, loans) and shelving (off-shelf counts) and the
domain event stream are deleted. The inbox streams, consumer groups and workers stay.
Request ids are fresh per step, so an earlier example's outcomes never answer a later
one. Each example therefore starts from the same empty library as the model, and a
failing example shrinks and replays on its own, which carrying state across examples
would not allow.

The automated storage capacity is 3 (``--storage-capacity 3``), so returns overflow it
and some books travel back to the shelves; the model tracks exactly which books are in
storage, and after every step lending's per-book status is compared with the model's.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, cast

import redis.asyncio as aioredis
from bookstream import AsyncClient, Outcome
from bookstream.audit import audit
from bookstream_core.keys import LibraryKeys
from bookstream_lending.keys import LendingKeys
from bookstream_shelving.keys import ShelvingKeys
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import RedisServer, WorkerProcess
from tests.test_concurrency import start_library, wait_quiescent

LIMIT = 5
CAPACITY = 3
USERS = ["ann", "bob", "cy"]
BOOKS = [f"b{i}" for i in range(11)] + ["war, and peace"]
STEP_TIMEOUT = 20.0

T = TypeVar("T")


# --------------------------------------------------------------------------- the model


@dataclass
class Expected:
    """The parts of an Outcome the model predicts (lists sorted: order is not specified)."""

    kind: str
    status: str
    user: str
    reason: str | None = None
    lent: list[str] = field(default_factory=list)
    unavailable: list[tuple[str, str]] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    not_held: list[str] = field(default_factory=list)
    books_in_hand: list[str] = field(default_factory=list)
    limit: int = LIMIT


def observed(o: Outcome) -> Expected:
    return Expected(
        kind=o.kind,
        status=o.status,
        user=o.user,
        reason=o.reason,
        lent=sorted(o.lent),
        unavailable=sorted((u.book, u.reason) for u in o.unavailable),
        returned=sorted(o.returned),
        not_held=sorted(o.not_held),
        books_in_hand=sorted(o.books_in_hand),
        limit=o.limit if o.limit is not None else -1,
    )


@dataclass
class Library:
    """docs/design.md §1, sequentially: one copy of each book, every book exists."""

    limit: int = LIMIT
    capacity: int = CAPACITY
    storage: set[str] = field(default_factory=set)
    lent: dict[str, str] = field(default_factory=dict)  # book -> user
    #: Told about interesting paths taken (the machine passes hypothesis.event).
    note: Callable[[str], object] = field(default=lambda _: None, repr=False)

    def holding(self, user: str) -> list[str]:
        return sorted(b for b, u in self.lent.items() if u == user)

    def request(self, user: str, books: list[str]) -> Expected:
        found: list[str] = []
        unavailable: list[tuple[str, str]] = []
        for book in dict.fromkeys(books):
            holder = self.lent.get(book)
            if holder is None:
                found.append(book)
            else:
                unavailable.append((book, "held_by_you" if holder == user else "lent"))
        in_hand = self.holding(user)
        if not found:
            status, reason = "denied", "none_available"
        elif len(in_hand) + len(found) > self.limit:
            status, reason = "denied", "limit"
        else:
            status, reason = "accepted", None
            for book in found:
                if book in self.storage:
                    self.note("a book lent from the automated storage")
                self.storage.discard(book)
                self.lent[book] = user
        return Expected(
            kind="request",
            status=status,
            user=user,
            reason=reason,
            lent=sorted(found) if status == "accepted" else [],
            unavailable=sorted(unavailable),
            books_in_hand=self.holding(user),
        )

    def give_back(self, user: str, books: list[str]) -> Expected:
        returned: list[str] = []
        not_held: list[str] = []
        for book in dict.fromkeys(books):
            if self.lent.get(book) == user:
                returned.append(book)
                del self.lent[book]
                if len(self.storage) < self.capacity:
                    self.storage.add(book)  # refills the automated storage
                else:
                    self.note("a returned book overflowed to the shelves")
            else:
                not_held.append(book)
        return Expected(
            kind="return",
            status="processed" if returned else "denied",
            user=user,
            reason=None if returned else "not_held",
            returned=sorted(returned),
            not_held=sorted(not_held),
            books_in_hand=self.holding(user),
        )

    def lending_status(self) -> dict[str, str]:
        """What lending's per-book status hash must hold (absent = on the shelves)."""
        status = {book: f"lent:{user}" for book, user in self.lent.items()}
        status.update({book: "storage" for book in self.storage})
        return status

    def location(self, book: str) -> tuple[str, str | None]:
        if book in self.lent:
            return "checked_out", self.lent[book]
        return ("in_storage", None) if book in self.storage else ("on_shelf", None)


# --------------------------------------------------------------------------- the system


class Env:
    """One event loop, one client and one raw connection, shared by every example."""

    def __init__(self, server: RedisServer) -> None:
        self.runner = asyncio.Runner()
        self.server = server
        self.keys = LibraryKeys("main")
        self.lending = LendingKeys(self.keys)
        self.shelving = ShelvingKeys(self.keys)
        self.client = AsyncClient(server.url)
        self.r = aioredis.Redis(unix_socket_path=str(server.socket))
        self.ids = itertools.count()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def close(self) -> None:
        self.run(self.client.aclose())
        self.run(self.r.aclose())
        self.runner.close()

    def new_request_id(self) -> str:
        return f"model-{next(self.ids):06d}"

    async def reset(self) -> None:
        """Empty the library between examples (at quiescence: nothing is in flight)."""
        await wait_quiescent(self.r)
        loans = [k async for k in self.r.scan_iter(match=self.lending.loans("*"))]
        await self.r.delete(
            self.lending.book_status,
            self.lending.storage,
            self.lending.borrowers,
            self.shelving.off_shelf,
            self.keys.domain_events,
            *loans,
        )

    async def lending_status(self) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], await self.r.hgetall(self.lending.book_status))
        return {k.decode(): v.decode() for k, v in raw.items()}


class LibraryMachine(RuleBasedStateMachine):
    env: ClassVar[Env]

    def __init__(self) -> None:
        super().__init__()
        self.env.run(self.env.reset())
        self.model = Library(note=event)
        self.history: list[tuple[str, str, list[str], Outcome]] = []

    # Book lists: duplicates allowed, and from a small set so books collide often.
    some_books = st.lists(st.sampled_from(BOOKS), min_size=1, max_size=7)

    @rule(user=st.sampled_from(USERS), books=some_books)
    def request(self, user: str, books: list[str]) -> None:
        rid = self.env.new_request_id()
        outcome = self.env.run(
            self.env.client.request(user, books, request_id=rid, timeout=STEP_TIMEOUT)
        )
        assert outcome.request_id == rid
        assert observed(outcome) == self.model.request(user, books), (user, books)
        event(f"request {outcome.status} {outcome.reason or ''}".strip())
        self.history.append(("request", user, books, outcome))

    @rule(data=st.data())
    def give_back(self, data: st.DataObject) -> None:
        """Mostly a user who holds books returns some of them, maybe with books they do
        not hold, maybe twice; otherwise anyone returns anything."""
        holders = sorted({u for u in self.model.lent.values()})
        if holders and data.draw(st.integers(0, 3)) > 0:
            user = data.draw(st.sampled_from(holders))
            held = self.model.holding(user)
            books = data.draw(st.lists(st.sampled_from(held), min_size=1, max_size=5))
            books += data.draw(st.lists(st.sampled_from(BOOKS), max_size=2))
            books = data.draw(st.permutations(books))
        else:
            user = data.draw(st.sampled_from(USERS))
            books = data.draw(self.some_books)
        rid = self.env.new_request_id()
        outcome = self.env.run(
            self.env.client.return_books(user, books, request_id=rid, timeout=STEP_TIMEOUT)
        )
        assert outcome.request_id == rid
        assert observed(outcome) == self.model.give_back(user, books), (user, books)
        event(f"return {outcome.status} {outcome.reason or ''}".strip())
        self.history.append(("return", user, books, outcome))

    @precondition(lambda self: bool(self.history))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """Resubmit an earlier request id (really written to the inbox): the first
        outcome comes back and nothing changes, whatever happened since."""
        kind, user, books, first = data.draw(st.sampled_from(self.history))
        client = self.env.client
        if kind == "request":
            submit = client.submit_request(user, books, request_id=first.request_id)
        else:
            submit = client.submit_return(user, books, request_id=first.request_id)
        self.env.run(submit)
        again = self.env.run(client.outcome(first.request_id, timeout=STEP_TIMEOUT))
        assert again == first
        # The duplicate entry is applied (as a no-op) before the next step observes.
        self.env.run(wait_quiescent(self.env.r))

    @invariant()
    def lending_state_matches_the_model(self) -> None:
        assert self.env.run(self.env.lending_status()) == self.model.lending_status()

    def teardown(self) -> None:
        self.env.run(self._final_checks())

    async def _final_checks(self) -> None:
        env = self.env
        await wait_quiescent(env.r)
        for book in BOOKS:
            where = await env.client.locate(book)
            assert (where.status, where.user) == self.model.location(book), book
        for user in USERS:
            assert await env.client.user_books(user) == self.model.holding(user)
        report = await audit(env.r, "main", user_limit=LIMIT, storage_capacity=CAPACITY)
        assert report.ok, "audit violations:\n" + "\n".join(report.violations)


def test_random_sequences_match_the_model(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_library(start_worker, redis_server, lending=2, shelving=2, capacity=CAPACITY)
    env = Env(redis_server)
    LibraryMachine.env = env
    try:
        run_state_machine_as_test(
            LibraryMachine,
            settings=settings(
                max_examples=40,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            ),
        )
    finally:
        env.close()


def test_the_model_itself() -> None:
    """The model's own rules, on the original README's scenario and the edge cases."""
    lib = Library(capacity=1)
    first = lib.request("user1", ["alice", "geb", "cities"])
    assert (first.status, first.lent) == ("accepted", ["alice", "cities", "geb"])
    back = lib.give_back("user1", ["cities", "nope"])
    assert (back.status, back.returned, back.not_held) == ("processed", ["cities"], ["nope"])
    assert lib.storage == {"cities"}
    second = lib.request("user2", ["geb", "cities", "gene"])
    assert (second.status, second.lent, second.unavailable) == (
        "accepted",
        ["cities", "gene"],
        [("geb", "lent")],
    )
    assert lib.storage == set()
    assert lib.request("user2", ["gene"]).unavailable == [("gene", "held_by_you")]
    assert lib.request("user2", ["geb"]).reason == "none_available"
    assert lib.request("user2", ["a", "b", "c", "d"]).reason == "limit"
    assert lib.holding("user2") == ["cities", "gene"]
    assert lib.give_back("user1", ["cities"]).reason == "not_held"
    lib.give_back("user2", ["cities", "gene"])
    assert lib.storage == {"cities"} and "gene" not in lib.lent
