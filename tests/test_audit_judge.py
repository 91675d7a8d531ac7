"""The audit judges most of the suite; here it is judged.

For each invariant ``bookstream audit`` checks (README.md "Invariants"), a real library
is built by real worker processes and driven through the public client and the CLI to a
clean state, the real CLI's audit passes on it, and then the library is corrupted by hand
in exactly that way: the audit must exit 1 and name the violation, and only violations
that corruption explains. An audit that always said OK, or always said the same thing,
fails here.

The library is built once per module (``clean``) and every key dumped; each test starts
from that exact state restored into the same redis-server (``built``), audited clean
again. The library (storage capacity 2, user limit 5):

- u1 holds a, b, c, d, e (at the limit); u2 holds f; g is in the automated storage;
- h was lent to u3 and returned while the storage was full: it is back on the shelf;
- shelving counts a..g off the shelf once each; the domain events hold every outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import redis
from bookstream import Client
from bookstream_core.events import SCHEMA_VERSION
from bookstream_core.keys import LibraryKeys
from bookstream_lending.keys import LendingKeys
from bookstream_shelving.keys import ShelvingKeys

from tests.conftest import (
    RedisServer,
    WorkerProcess,
    _spawn,
    _wait_started,
    admit,
    run_cli,
    wait_for,
    worker_command,
)
from tests.test_concurrency import Entries

LIB = "main"
CAPACITY = 2
KEYS = LibraryKeys(LIB)
LK = LendingKeys(KEYS)
SK = ShelvingKeys(KEYS)
LENDING_INBOX = KEYS.inbox("lending")
SHELVING_INBOX = KEYS.inbox("shelving")


@dataclass
class Library:
    server: RedisServer
    env: dict[str, str]
    r: redis.Redis

    def cli(self, *args: str, library: str = LIB) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env, *args, "--library", library, server=self.server)

    def audit(self, library: str = LIB) -> tuple[int, list[str], str]:
        """The real ``bookstream audit --json``: exit code, violations, and the text form."""
        result = self.cli("audit", "--json", "--storage-capacity", str(CAPACITY), library=library)
        assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is (result.returncode == 0)
        text = self.cli("audit", "--storage-capacity", str(CAPACITY), library=library)
        assert text.returncode == result.returncode, text.stdout
        return result.returncode, list(report["violations"]), text.stdout

    def outcome_json(self, request_id: str) -> dict[str, object]:
        """The domain event recorded for one request id (exactly one on a clean library)."""
        events = cast(Entries, self.r.xrange(KEYS.domain_events))
        found = [
            json.loads(fields[b"e"])
            for _, fields in events
            if json.loads(fields[b"e"])["request_id"] == request_id
        ]
        assert len(found) == 1, found
        return dict(found[0])

    def add_event(self, outcome: dict[str, object]) -> None:
        self.r.xadd(KEYS.domain_events, {"e": json.dumps(outcome)})


def quiescent(r: redis.Redis) -> bool:
    """Every inbox entry delivered and acknowledged (one snapshot)."""
    pipe = r.pipeline(transaction=True)
    for inbox in (LENDING_INBOX, SHELVING_INBOX):
        pipe.xinfo_stream(inbox)
        pipe.xinfo_groups(inbox)
    replies = pipe.execute()
    for stream, groups in zip(replies[0::2], replies[1::2], strict=True):
        if not groups:
            return False
        for group in groups:
            if group["pending"] or group["last-delivered-id"] != stream["last-generated-id"]:
                return False
    return True


def expect_exit(result: subprocess.CompletedProcess[str], code: int, status: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert json.loads(result.stdout)["status"] == status, result.stdout


@dataclass
class Clean:
    """The clean library of the module docstring: its server and every key, dumped."""

    server: RedisServer
    env: dict[str, str]
    keys: dict[bytes, tuple[bytes, int]]  # key -> (DUMP, PTTL)


def _start(service: str, server: RedisServer, env: dict[str, str], log: Path) -> WorkerProcess:
    """What the start_worker fixture does, for a module-scoped library."""
    args = [worker_command(service), f"{service[0]}1", "--redis", server.url, "--library", LIB]
    args += ["--log-level", "info"]
    if service == "lending":  # the storage is Lending's; Shelving takes no such option
        args += ["--storage-capacity", str(CAPACITY)]
    with open(log, "ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    worker = WorkerProcess(service, f"{service[0]}1", process, log)
    _wait_started(worker, server, LIB)
    return worker


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clean]:
    """Real workers drive a library to the state in the module docstring, through the
    client and the CLI (asserting the CLI's exit codes on the way); then they stop, so
    nothing repairs or moves what a test corrupts, and the audit passes. Every key is
    dumped, for each test to start from exactly this state."""
    home = tmp_path_factory.mktemp("audit-judge")
    directory = Path(tempfile.mkdtemp(prefix="bsr-", dir="/tmp"))  # short socket path
    sock = directory / "r.sock"
    server = RedisServer(directory, sock, _spawn(directory, sock, 0, "everysec"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKSTREAM_")}
    env["BOOKSTREAM_HOME"] = str(home / "home")
    workers: list[WorkerProcess] = []
    try:
        workers += [_start(s, server, env, home / f"{s}.log") for s in ("lending", "shelving")]
        lib = Library(server, env, server.client())
        drive(lib)
        wait_for(lambda: quiescent(lib.r), timeout=20)
        for worker in workers:
            assert worker.terminate() == 0, worker.output()
        assert lib.r.hgetall(LK.book_status) == {
            **{b.encode(): b"lent:u1" for b in "abcde"},
            b"f": b"lent:u2",
            b"g": b"storage",
        }
        assert lib.r.hgetall(SK.off_shelf) == {b.encode(): b"1" for b in "abcdefg"}
        code, violations, text = lib.audit()
        assert (code, violations) == (0, []), text
        assert f"audit of library {LIB}: OK (6 books lent to 2 users, 1 in storage" in text
        keys = {
            key: (cast(bytes, lib.r.dump(key)), lib.r.pttl(key)) for key in lib.r.scan_iter("*")
        }
        yield Clean(server, env, keys)
    finally:
        for worker in workers:
            worker.kill()
        server.close_clients()
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


def drive(lib: Library) -> None:
    with Client(lib.server.url, LIB) as client:
        o = client.request("u1", ["a", "b", "c", "d", "e"], request_id="r-u1")
        assert (o.status, o.lent) == ("accepted", ["a", "b", "c", "d", "e"])
        o = client.request("u2", ["f", "g"], request_id="r-u2")
        assert (o.status, o.lent) == ("accepted", ["f", "g"])
        o = client.return_books("u2", ["f", "g"], request_id="ret-u2")  # both into storage
        assert (o.status, o.returned) == ("processed", ["f", "g"])
        o = client.request("u3", ["h"], request_id="r-u3")  # from the shelves
        assert (o.status, o.lent) == ("accepted", ["h"])
        o = client.return_books("u3", ["h"], request_id="ret-u3")  # storage full: reshelved
        assert (o.status, o.returned) == ("processed", ["h"])

    # Outcomes through the CLI, exit codes included: denied is 1, accepted 0.
    expect_exit(lib.cli("request", "u3", "a", "--request-id", "cli-lent", "--json"), 1, "denied")
    expect_exit(lib.cli("request", "u1", "z", "--request-id", "cli-limit", "--json"), 1, "denied")
    expect_exit(lib.cli("return", "u4", "a", "--request-id", "cli-nothing", "--json"), 1, "denied")
    expect_exit(lib.cli("request", "u2", "f", "--request-id", "cli-ok", "--json"), 0, "accepted")
    # A request a foreign producer got wrong (no books) is rejected: exit 1 as well.
    bad = {"v": SCHEMA_VERSION, "type": "request", "id": "raw-bad", "user": "u5", "books": []}
    lib.r.xadd(LENDING_INBOX, {"e": json.dumps(bad)})
    expect_exit(lib.cli("outcome", "raw-bad", "--json"), 1, "rejected")


@pytest.fixture
def built(clean: Clean) -> Iterator[Library]:
    """The clean library, restored key by key (streams with their groups, consumers and
    pending lists; TTLs as they were), and audited clean again."""
    r = redis.Redis(unix_socket_path=str(clean.server.socket))
    try:
        r.flushall()
        for key, (payload, ttl) in clean.keys.items():
            r.restore(key, max(ttl, 0), payload)
        lib = Library(clean.server, clean.env, r)
        code, violations, text = lib.audit()
        assert (code, violations) == (0, []), text
        yield lib
    finally:
        r.close()


# --------------------------------------------------------------------------- corruptions
# Each takes the clean library and returns the violations it must produce: fragments, each
# of which must appear in exactly one reported violation, and nothing else reported.

Corruption = Callable[[Library], list[str]]


def in_storage_and_lent(lib: Library) -> list[str]:
    lib.r.sadd(LK.storage, "a")  # a is lent to u1
    return [
        "book 'a' is both in the automated storage and lent",
        "book 'a' is in the automated storage but Lending's record of it is lent ('u1')",
    ]


def status_storage_not_in_storage(lib: Library) -> list[str]:
    lib.r.srem(LK.storage, "g")
    return [
        "book 'g' has status storage but is not in the automated storage",
        "shelving has book 'g' off the shelf but lending does not hold it",
    ]


def lent_to_two_users(lib: Library) -> list[str]:
    lib.r.sadd(LK.loans("u2"), "a")  # a is lent to u1
    return [
        "book 'a' is among the loans of user 'u2' but Lending's record of it is lent ('u1')",
        "book 'a' is lent to 2 users",
        "user 'u2': outcomes add up to ['f'] but the loans are ['a', 'f']",
    ]


def missing_from_loans(lib: Library) -> list[str]:
    lib.r.srem(LK.loans("u1"), "a")
    return [
        "book 'a' is marked lent to 'u1' but missing from their loans",
        "user 'u1': outcomes add up to ['a', 'b', 'c', 'd', 'e'] "
        "but the loans are ['b', 'c', 'd', 'e']",
    ]


def borrower_not_in_borrowers(lib: Library) -> list[str]:
    lib.r.srem(LK.borrowers, "u2")
    return ["user 'u2' holds books but is not in the borrowers set"]


def borrower_holding_nothing(lib: Library) -> list[str]:
    lib.r.sadd(LK.borrowers, "u3")
    return ["user 'u3' is in the borrowers set but holds nothing"]


def over_the_limit(lib: Library) -> list[str]:
    """A sixth loan for u1, consistent everywhere else (status, loans, shelving, and an
    outcome that lent it): only the limit is broken."""
    lib.r.hset(LK.book_status, "z", "lent:u1")
    lib.r.sadd(LK.loans("u1"), "z")
    lib.r.hset(SK.off_shelf, "z", 1)
    forged = lib.outcome_json("cli-ok")
    forged.update(request_id="forged-z", user="u1", lent=["z"], books_in_hand=[*"abcdez"])
    lib.add_event(forged)
    return ["user 'u1' holds 6 books, over the limit of 5"]


def storage_over_capacity(lib: Library) -> list[str]:
    """Two more books in the storage, consistent everywhere: only the capacity is broken."""
    for book in ("x", "y"):
        lib.r.hset(LK.book_status, book, "storage")
        lib.r.sadd(LK.storage, book)
        lib.r.hset(SK.off_shelf, book, 1)
    return [f"the automated storage holds 3 books, over its capacity of {CAPACITY}"]


def off_shelf_twice(lib: Library) -> list[str]:
    lib.r.hincrby(SK.off_shelf, "a", 1)
    return ["shelving counts book 'a' off the shelf 2 times"]


def off_shelf_missing(lib: Library) -> list[str]:
    lib.r.hdel(SK.off_shelf, "f")
    return ["lending holds book 'f' but shelving has it on the shelf"]


def off_shelf_stray(lib: Library) -> list[str]:
    lib.r.hset(SK.off_shelf, "h", 1)  # h went back to the shelf
    return ["shelving has book 'h' off the shelf but lending does not hold it"]


def reservation_left_over(lib: Library) -> list[str]:
    lib.r.hset(LK.book_status, "h", "paged:stale")
    return ["book 'h' is still paged for request 'stale'"]


def held_for_a_request_left_over(lib: Library) -> list[str]:
    """What a request in flight does to a book from the storage, never decided."""
    lib.r.hset(LK.book_status, "g", "held:stale")
    lib.r.srem(LK.storage, "g")
    return [
        "book 'g' is still reserved for request 'stale'",
        "shelving has book 'g' off the shelf but lending does not hold it",
    ]


def request_state_left_over(lib: Library) -> list[str]:
    lib.r.hset(LK.request("stale"), mapping={"user": "u9", "held": "[]", "paged": '["h"]'})
    return ["request 'stale' is still in flight (waiting for Shelving)"]


def unknown_status(lib: Library) -> list[str]:
    """A status lending has no meaning for: the book is nowhere (and never lendable: a
    request finds it 'reserved' forever)."""
    lib.r.hset(LK.book_status, "h", "lost")
    return ["book 'h' has an unknown status 'lost'"]


def pending_entry(lib: Library) -> list[str]:
    event = {"v": SCHEMA_VERSION, "type": "return", "id": "read-1", "user": "u1", "books": ["a"]}
    lib.r.xadd(LENDING_INBOX, {"e": json.dumps(event)})
    lib.r.xreadgroup("lending", "ghost", {LENDING_INBOX: ">"}, count=1)  # read, never acked
    return [f"group 'lending' on {LENDING_INBOX} has 1 pending entry"]


def unread_entry(lib: Library) -> list[str]:
    event = {"v": SCHEMA_VERSION, "type": "reshelve", "id": "x", "eid": "x:1", "books": ["h"]}
    lib.r.xadd(SHELVING_INBOX, {"e": json.dumps(event)})
    return [f"group 'shelving' on {SHELVING_INBOX} has 1 entry not yet read"]


def two_outcomes_for_one_request(lib: Library) -> list[str]:
    lib.add_event(lib.outcome_json("cli-lent"))  # a denial, recorded twice
    return ["request 'cli-lent' has more than one outcome"]


def applied_twice(lib: Library) -> list[str]:
    """What a stale batch applied a second time leaves: the same acceptance twice."""
    lib.add_event(lib.outcome_json("r-u1"))
    return [
        "request 'r-u1' has more than one outcome",
        *(f"request 'r-u1' lent '{b}' to 'u1' while 'u1' held it" for b in "abcde"),
    ]


def replay_lends_a_book_twice(lib: Library) -> list[str]:
    forged = lib.outcome_json("cli-ok")
    forged.update(request_id="forged-a", user="u2", lent=["a"], books_in_hand=["a", "f"])
    lib.add_event(forged)
    return [
        "request 'forged-a' lent 'a' to 'u2' while 'u1' held it",
        "user 'u1': outcomes add up to ['b', 'c', 'd', 'e'] "
        "but the loans are ['a', 'b', 'c', 'd', 'e']",
        "user 'u2': outcomes add up to ['a', 'f'] but the loans are ['f']",
    ]


def replay_returns_a_book_not_lent(lib: Library) -> list[str]:
    forged = lib.outcome_json("ret-u3")
    forged.update(request_id="forged-ret", user="u2", returned=["a"], books_in_hand=["f"])
    lib.add_event(forged)
    return [
        "return 'forged-ret' took back 'a', not lent to 'u2'",
        "user 'u1': outcomes add up to ['b', 'c', 'd', 'e'] "
        "but the loans are ['a', 'b', 'c', 'd', 'e']",
    ]


def loans_the_outcomes_do_not_explain(lib: Library) -> list[str]:
    """A loan consistent in every state key, but no outcome ever lent it."""
    lib.r.hset(LK.book_status, "h", "lent:u2")
    lib.r.sadd(LK.loans("u2"), "h")
    lib.r.hset(SK.off_shelf, "h", 1)
    return ["user 'u2': outcomes add up to ['f'] but the loans are ['f', 'h']"]


def domain_event_not_an_outcome(lib: Library) -> list[str]:
    entry = cast(bytes, lib.r.xadd(KEYS.domain_events, {"e": "not an outcome"}))
    return [f"domain event {entry.decode()} is not an outcome"]


def loans_of_the_wrong_type(lib: Library) -> list[str]:
    """Written by something else: reported, not a traceback (which exits 1 too)."""
    lib.r.set(LK.loans("u9"), "not a set")
    return [f"key '{LK.loans('u9')}' holds a string, not a set"]


def events_of_the_wrong_type(lib: Library) -> list[str]:
    lib.r.delete(KEYS.domain_events)
    lib.r.set(KEYS.domain_events, "not a stream")
    return [f"key '{KEYS.domain_events}' holds a string, not a stream"]


def inbox_of_the_wrong_type(lib: Library) -> list[str]:
    lib.r.delete(SHELVING_INBOX)
    lib.r.hset(SHELVING_INBOX, "e", "not a stream")
    return [f"key '{SHELVING_INBOX}' holds a hash, not a stream"]


def off_shelf_count_not_a_number(lib: Library) -> list[str]:
    lib.r.hset(SK.off_shelf, "a", "x")
    return ["shelving counts book 'a' off the shelf x times"]


CORRUPTIONS: list[Corruption] = [
    in_storage_and_lent,
    status_storage_not_in_storage,
    lent_to_two_users,
    missing_from_loans,
    borrower_not_in_borrowers,
    borrower_holding_nothing,
    over_the_limit,
    storage_over_capacity,
    off_shelf_twice,
    off_shelf_missing,
    off_shelf_stray,
    reservation_left_over,
    held_for_a_request_left_over,
    request_state_left_over,
    unknown_status,
    pending_entry,
    unread_entry,
    two_outcomes_for_one_request,
    applied_twice,
    replay_lends_a_book_twice,
    replay_returns_a_book_not_lent,
    loans_the_outcomes_do_not_explain,
    domain_event_not_an_outcome,
    loans_of_the_wrong_type,
    events_of_the_wrong_type,
    inbox_of_the_wrong_type,
    off_shelf_count_not_a_number,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda c: c.__name__)
def test_the_audit_names_each_corruption(built: Library, corrupt: Corruption) -> None:
    expected = corrupt(built)
    code, violations, text = built.audit()
    assert code == 1, text
    for fragment in expected:
        matching = [v for v in violations if fragment in v]
        assert len(matching) == 1, (fragment, violations)
        assert f"  violation: {matching[0]}" in text
    assert len(violations) == len(expected), violations


def test_a_trimmed_event_stream_is_noted_not_a_violation(built: Library) -> None:
    """The domain events are bounded: once trimmed, the loans cannot be replayed from the
    start, which the audit notes; what it still can check (one outcome per request id
    among those left) it checks."""
    built.r.xtrim(KEYS.domain_events, maxlen=3, approximate=False)
    code, violations, text = built.audit()
    assert (code, violations) == (0, []), text
    assert "  note: the domain event stream was trimmed" in text
    built.add_event(built.outcome_json("raw-bad"))  # the last outcome, again
    code, violations, text = built.audit()
    assert (code, violations) == (1, ["request 'raw-bad' has more than one outcome"]), text


def test_unread_entries_in_a_never_served_library(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    """Requests submitted to a library no worker ever served sit in an inbox that has no
    consumer group yet: nothing has read them, and the audit must say so."""
    lib = Library(redis_server, bookstream_env, redis_server.client())
    assert lib.audit("fresh")[:2] == (0, [])  # an empty library is a clean one
    for n in (1, 2):
        submitted = lib.cli("request", f"u{n}", "a", "--no-wait", library="fresh")
        assert submitted.returncode == 0, submitted.stderr
    fresh = LibraryKeys("fresh")
    assert lib.r.llen(fresh.submissions) == 2 and not lib.r.exists(fresh.inbox("lending"))
    code, violations, text = lib.audit("fresh")
    assert code == 1, text
    assert violations == [
        f"{fresh.submissions} holds 2 submissions no lending worker has admitted yet: "
        "start one (bookstream serve) or wait for it"
    ]
    assert f"  violation: {violations[0]}" in text
    # Admitted (as a worker would) but never read: the inbox has no group yet.
    assert admit(lib.r, "fresh") == 2
    code, violations, text = lib.audit("fresh")
    assert violations == [
        f"{fresh.inbox('lending')} holds 2 entries but no lending worker ever read it "
        "(no group 'lending'): start one (bookstream serve)"
    ], text
