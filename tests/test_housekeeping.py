"""The housekeeping promises, end to end with running worker processes.

README.md promises that processed stream entries are trimmed and the domain events are
bounded, that outcomes and idempotency records live for ``--retention`` seconds, that a
gone consumer holding nothing is removed by the workers, that a worker restarted under
its own name first re-reads what that name holds, and that the metrics describe the
situation. Each is checked here on real workers against a real redis-server, with values
the situation implies rather than "some value".
"""

from __future__ import annotations

import bisect
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import pytest
import redis
from bookstream import Client
from bookstream_core.config import RuntimeSettings
from bookstream_core.events import SCHEMA_VERSION
from bookstream_core.keys import LibraryKeys
from bookstream_core.types import ServiceName
from bookstream_lending.keys import LendingKeys
from bookstream_shelving.keys import ShelvingKeys
from redis.typing import StreamIdT

from tests.conftest import RedisServer, WorkerProcess, admit, wait_for
from tests.test_concurrency import Entries
from tests.test_metrics import Sample, scrape

LIB = "main"
KEYS = LibraryKeys(LIB)
LK = LendingKeys(KEYS)
SK = ShelvingKeys(KEYS)


def _done(event_id: str) -> str:
    """Shelving's record of an applied event (its key, read here as the test's evidence)."""
    return f"{KEYS.prefix}shelving:done:{event_id}"


LENDING_INBOX = KEYS.inbox("lending")
SHELVING_INBOX = KEYS.inbox("shelving")
EVENTS = KEYS.domain_events
EVENTS_MAXLEN = RuntimeSettings().events_maxlen

StartWorker = Callable[..., WorkerProcess]


def metric(name: str, service: str | None = "lending", **labels: str) -> Sample:
    """A sample's key in ``scrape()``; ``service=None`` for metrics without that label."""
    if service is not None:
        labels["service"] = service
    return (name, frozenset({"library": LIB, **labels}.items()))


def return_event(request_id: str, user: str = "nobody", books: tuple[str, ...] = ("x",)) -> str:
    """A valid return of books the user does not hold: one outcome (denied), no follow-up."""
    return json.dumps(
        {"v": SCHEMA_VERSION, "type": "return", "id": request_id, "user": user, "books": books}
    )


def id_tuple(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq)


def preload(r: redis.Redis, stream: str, events: list[str]) -> list[tuple[int, int]]:
    """XADD every event; their ids, in order."""
    ids: list[tuple[int, int]] = []
    for start in range(0, len(events), 10_000):
        pipe = r.pipeline(transaction=False)
        for event in events[start : start + 10_000]:
            pipe.xadd(stream, {"e": event})
        ids += [id_tuple(entry_id) for entry_id in pipe.execute()]
    return ids


# --------------------------------------------------------------------------- bounded streams


@dataclass
class Snapshot:
    at: float
    inbox_len: int
    events_len: int
    read: int  # entries of the backlog delivered to the group (a fact: its last delivered id)


def snapshot(r: redis.Redis, service: ServiceName, ids: list[tuple[int, int]]) -> Snapshot:
    inbox = KEYS.inbox(service)
    pipe = r.pipeline(transaction=True)
    pipe.xlen(inbox)
    pipe.xlen(EVENTS)
    pipe.xinfo_groups(inbox)
    inbox_len, events_len, groups = pipe.execute()
    (group,) = groups
    read = bisect.bisect_right(ids, id_tuple(group["last-delivered-id"]))
    return Snapshot(time.monotonic(), inbox_len, events_len, read)


def shelving_backlog(total: int) -> list[str]:
    """Fetches and reshelvings of distinct books, each pair leaving the book on the shelf."""
    events = []
    for i in range(total // 2):
        for kind in ("fetch", "reshelve"):
            event = {"v": SCHEMA_VERSION, "type": kind, "id": f"q{i}", "eid": f"q{i}:{kind}"}
            events.append(json.dumps({**event, "books": [f"book-{i}"]}))
    return events


# A backlog larger than the domain events' bound for lending (each return is answered
# with one outcome); fetches and reshelvings for shelving (no outcome of their own).
BACKLOGS = {
    "lending": lambda: [return_event(f"d-{i}") for i in range(EVENTS_MAXLEN + 20_000)],
    "shelving": lambda: shelving_backlog(80_000),
}


@pytest.mark.parametrize("service", ["lending", "shelving"])
def test_inbox_and_events_stay_bounded_during_a_long_drain(
    redis_server: RedisServer, start_worker: StartWorker, service: ServiceName
) -> None:
    """A backlog drained by one slow worker: its inbox is trimmed while the drain goes on
    (never longer than what was unread a trim interval earlier, not only at the end) and
    ends empty; the domain events never exceed their bound although more outcomes than
    that were appended; and the lag gauge follows the real backlog."""
    r = redis_server.client()
    backlog = BACKLOGS[service]()
    total = len(backlog)
    ids = preload(r, KEYS.inbox(service), backlog)
    worker = start_worker(
        service,
        redis_server,
        name="drainer",
        library=LIB,
        metrics=True,
        extra=["--batch-size", "5", "--in-flight", "1", "--log-level", "warning"],
    )
    port = worker.metrics_port
    assert port is not None
    # The worker takes its name before it creates its group.
    wait_for(lambda: bool(r.xinfo_groups(KEYS.inbox(service))), timeout=20)
    snaps: list[Snapshot] = []
    scraped: list[tuple[float, float]] = []  # (time, lag gauge)
    last_scrape = 0.0
    # Trimming runs every trim interval, on a housekeeping tick of at most a second.
    window = RuntimeSettings().trim_interval_ms / 1000 + 1.0 + 0.5
    deadline = time.monotonic() + 60
    drained_at = 0.0
    while True:
        snaps.append(snapshot(r, service, ids))
        last = snaps[-1]
        if last.read == total:
            drained_at = drained_at or last.at
            if last.inbox_len == 0 or last.at > drained_at + 2 * window:
                break
        assert last.at < deadline, f"not drained within 60 s: {last}"
        if last.at - last_scrape > 0.25:
            last_scrape = time.monotonic()
            gauge = scrape(port).get(metric("bookstream_stream_lag", service))
            if gauge is not None:
                scraped.append((last_scrape, gauge))
        time.sleep(0.02)
    start = snaps[0].at

    def read_by(t: float) -> int:
        """Entries delivered by time t (at least: the last snapshot before it)."""
        return max((s.read for s in snaps if s.at <= t), default=0)

    def unread_after(t: float) -> int:
        """Entries still unread after time t (at most: the first snapshot after it)."""
        return min((total - s.read for s in snaps if s.at >= t), default=0)

    for snap in snaps:
        trimmed_to = total - read_by(snap.at - window)
        assert snap.inbox_len <= trimmed_to, (snap.at - start, snap, trimmed_to)
    # ...and it did so while the drain went on, not only once it was over.
    mid = [s for s in snaps if s.read < total and s.inbox_len <= total * 0.75]
    assert mid, f"the inbox was not trimmed during a {drained_at - start:.1f} s drain"
    assert snaps[-1].inbox_len == 0, "processed entries were left in the inbox"

    if service == "lending":
        node = int(cast(bytes, r.config_get("stream-node-max-entries")["stream-node-max-entries"]))
        assert max(s.events_len for s in snaps) <= EVENTS_MAXLEN + node
        info = r.xinfo_stream(EVENTS)
        assert int(info["entries-added"]) == total  # every entry answered, once
        assert int(info["length"]) <= EVENTS_MAXLEN + node
    else:
        assert r.xlen(KEYS.replies) == total // 2  # one reply per fetch, nothing more
        assert not r.exists(SK.off_shelf)  # every book back on the shelf

    # The lag gauge is the backlog as the worker last measured it, at most a window ago.
    during = [(t, g) for t, g in scraped if t < drained_at]
    assert during and any(g > 0 for _, g in during), scraped
    for t, gauge in scraped:
        assert unread_after(t) <= gauge <= total - read_by(t - window), (t - start, gauge)
    wait_for(lambda: scrape(port)[metric("bookstream_stream_lag", service)] == 0, timeout=5)
    assert scrape(port)[metric("bookstream_stream_pending", service)] == 0


# --------------------------------------------------------------------------- retention


def test_outcomes_and_idempotency_records_live_for_the_retention(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    """Every outcome (accepted, processed, denied, rejected), every shelving record
    (fetch, reshelve) and every door's binding of a request id to its user carries
    --retention as its TTL from the moment it was written, no other key of the library
    expires, and they are gone once the retention has passed."""
    retention = 5
    extra = ["--retention", str(retention)]
    start_worker(
        "lending", redis_server, name="l1", library=LIB, extra=[*extra, "--storage-capacity", "1"]
    )
    start_worker("shelving", redis_server, name="s1", library=LIB, extra=extra)
    r = redis_server.client()
    written: dict[str, tuple[float, float]] = {}  # key -> written between these two times

    with Client(redis_server.url, LIB) as client:
        t0 = time.monotonic()
        o = client.request("u1", ["a", "b"], request_id="t-req")  # both fetched
        assert (o.status, o.lent) == ("accepted", ["a", "b"])
        written[KEYS.outcome("t-req")] = written[_done("t-req:fetch")] = (t0, time.monotonic())

        t0 = time.monotonic()
        o = client.return_books("u1", ["a", "b"], request_id="t-ret")  # b is reshelved
        assert (o.status, o.returned) == ("processed", ["a", "b"])
        written[KEYS.outcome("t-ret")] = (t0, time.monotonic())
        wait_for(lambda: bool(r.exists(_done("t-ret:reshelve"))), timeout=10)
        written[_done("t-ret:reshelve")] = (t0, time.monotonic())

        t0 = time.monotonic()
        o = client.return_books("u2", ["a"], request_id="t-deny")
        assert (o.status, o.reason) == ("denied", "not_held")
        written[KEYS.outcome("t-deny")] = (t0, time.monotonic())

        t0 = time.monotonic()
        bad = {"v": SCHEMA_VERSION, "type": "request", "id": "t-bad", "user": "u3", "books": []}
        r.xadd(LENDING_INBOX, {"e": json.dumps(bad)})
        assert client.outcome("t-bad", timeout=10).status == "rejected"
        written[KEYS.outcome("t-bad")] = (t0, time.monotonic())

    expiring = {k.decode() for k in r.scan_iter(KEYS.outcome("*"))}
    expiring |= {k.decode() for k in r.scan_iter(_done("*"))}
    assert expiring == set(written)
    for key, (first, last) in written.items():
        before = time.monotonic()
        ttl_ms = r.pttl(key)
        after = time.monotonic()
        # Set with EX retention somewhere in [first, last]: what is left is bounded both ways.
        assert retention * 1000 - (after - first) * 1000 - 5 <= ttl_ms, (key, ttl_ms)
        assert ttl_ms <= retention * 1000 - (before - last) * 1000 + 5, (key, ttl_ms)
    locks = KEYS.worker_lock("lending", ""), KEYS.worker_lock("shelving", "")
    for raw in r.scan_iter(f"{KEYS.prefix}*"):
        key = raw.decode()
        if key not in expiring and not key.startswith(locks):
            assert r.ttl(key) == -1, key  # the library's state is not on a timer

    wait_for(lambda: not any(r.exists(key) for key in written), timeout=retention + 2)
    assert time.monotonic() - min(first for first, _ in written.values()) >= retention - 0.1


# --------------------------------------------------------------------------- consumers


def consumers(r: redis.Redis, group: str = "lending") -> set[str]:
    return {c["name"].decode() for c in r.xinfo_consumers(KEYS.inbox("lending"), group)}


def test_a_gone_consumer_holding_nothing_is_removed_by_the_workers(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    """Consumers whose worker is gone (no name lock) are removed by a running worker's
    housekeeping, once what they held was claimed and applied; a consumer whose worker
    still holds its name stays until that name is let go."""
    r = redis_server.client()
    r.xgroup_create(LENDING_INBOX, "lending", id="0", mkstream=True)
    r.xgroup_createconsumer(LENDING_INBOX, "lending", "gone-idle")
    r.xadd(LENDING_INBOX, {"e": return_event("held-by-gone")})
    r.xreadgroup("lending", "gone-holding", {LENDING_INBOX: ">"})
    r.xgroup_createconsumer(LENDING_INBOX, "lending", "alive-idle")
    alive_lock = KEYS.worker_lock("lending", "alive-idle")
    r.set(alive_lock, json.dumps({"pid": 1, "host": "elsewhere"}), px=60_000)
    assert consumers(r) == {"gone-idle", "gone-holding", "alive-idle"}

    worker = start_worker(
        "lending", redis_server, name="keeper", library=LIB, extra=["--claim-idle-ms", "500"]
    )
    wait_for(lambda: consumers(r) == {"keeper", "alive-idle"}, timeout=15)
    # Nothing was discarded with it: the entry gone-holding held was claimed and answered.
    assert json.loads(cast(bytes, r.get(KEYS.outcome("held-by-gone"))))["status"] == "denied"
    assert r.xpending(LENDING_INBOX, "lending")["pending"] == 0
    assert "removed consumers of gone workers" in worker.output()

    r.delete(alive_lock)  # that worker is gone now too
    wait_for(lambda: consumers(r) == {"keeper"}, timeout=15)


def blocked_in_read(r: redis.Redis, client_name: str) -> bool:
    return any(
        c.get("name") == client_name and c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")
        for c in r.client_list()
    )


def test_a_worker_restarted_under_its_name_rereads_its_pending_entries_before_any_claim(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    """A worker SIGKILLed after Redis delivered it a request it never applied: restarted
    under the same name it applies that request at once, long before claiming (60 s idle
    here) could have moved it, while a live peer waits to claim it."""
    slow_claim = ["--claim-idle-ms", "60000"]
    r = redis_server.client()
    start_worker("shelving", redis_server, name="s1", library=LIB)
    first = start_worker(
        "lending",
        redis_server,
        name="l1",
        library=LIB,
        extra=slow_claim,
        env={"BOOKSTREAM_LOCK_TTL_MS": "1000"},
    )
    with Client(redis_server.url, LIB) as client:
        # x goes into the automated storage, so a request for it is decided in one step.
        assert client.request("u0", ["x"]).status == "accepted"
        assert client.return_books("u0", ["x"]).status == "processed"
        assert r.hget(LK.book_status, "x") == b"storage"

        # Freeze the worker while it waits in XREADGROUP, so that Redis delivers the next
        # entry to it (pending in its name) although the process never sees it.
        rid = ""
        for attempt in range(50):
            os.kill(first.process.pid, signal.SIGSTOP)
            if not blocked_in_read(r, "bookstream-lending-l1"):
                os.kill(first.process.pid, signal.SIGCONT)  # between two reads: again
                time.sleep(0.01)
                continue
            rid = client.submit_request("u1", ["x"], request_id=f"own-{attempt}")
            admit(r, LIB)  # as its (frozen) admission loop would have
            if r.xpending_range(LENDING_INBOX, "lending", "-", "+", 10, "l1"):
                break
            # Its read timed out just before: it reads the request normally. Undo that.
            os.kill(first.process.pid, signal.SIGCONT)
            assert client.outcome(rid).status == "accepted"
            assert client.return_books("u1", ["x"]).status == "processed"
            rid = ""
        assert rid, "never caught the worker waiting in XREADGROUP"
        first.kill()  # SIGKILL, stopped as it is
        (entry,) = r.xpending_range(LENDING_INBOX, "lending", "-", "+", 10, "l1")
        assert entry["times_delivered"] == 1
        assert r.get(KEYS.outcome(rid)) is None
        assert client.locate("x").status == "in_storage"  # the process never applied it

        peer = start_worker(
            "lending", redis_server, name="l2", library=LIB, metrics=True, extra=slow_claim
        )
        wait_for(lambda: not r.exists(KEYS.worker_lock("lending", "l1")), timeout=5)
        (entry,) = r.xpending_range(LENDING_INBOX, "lending", "-", "+", 10, "l1")
        idle_ms = int(entry["time_since_delivered"])
        restarted_at = time.monotonic()
        again = start_worker(
            "lending", redis_server, name="l1", library=LIB, metrics=True, extra=slow_claim
        )
        outcome = client.outcome(rid, timeout=15)
        took = time.monotonic() - restarted_at
    assert (outcome.status, outcome.lent, outcome.user) == ("accepted", ["x"], "u1")
    # Claimable only once idle 60 s: it was applied long before it could have been.
    assert idle_ms + took * 1000 < 60_000 / 2, (idle_ms, took)
    assert r.xpending(LENDING_INBOX, "lending")["pending"] == 0
    assert again.metrics_port is not None and peer.metrics_port is not None
    mine = scrape(again.metrics_port)
    assert mine.get(metric("bookstream_claims_total"), 0.0) == 0
    assert mine[metric("bookstream_requests_total", service=None, status="accepted")] == 1
    assert scrape(peer.metrics_port).get(metric("bookstream_claims_total"), 0.0) == 0
    assert "claimed idle entries" not in again.output() + peer.output()


# --------------------------------------------------------------------------- metrics


def read_as(r: redis.Redis, consumer: str, count: int) -> list[StreamIdT]:
    """Deliver the next ``count`` lending entries to ``consumer``; their ids."""
    reply = cast(
        list[tuple[bytes, Entries]],
        r.xreadgroup("lending", consumer, {LENDING_INBOX: ">"}, count=count),
    )
    ids: list[StreamIdT] = [entry_id for entry_id, _ in reply[0][1]]
    assert len(ids) == count
    return ids


def redis_now_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def test_claims_and_gauges_have_the_values_the_situation_implies(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    """Before the worker starts, two gone consumers hold entries: ghost-a three that have
    been idle a minute (past --claim-idle-ms), written 200 s ago; ghost-b two just read,
    written 100 s ago. Behind them, two malformed entries and four valid ones. The worker
    must claim exactly ghost-a's three, leave ghost-b's two pending, and say so; then
    follow each change of the situation."""
    r = redis_server.client()
    r.xgroup_create(LENDING_INBOX, "lending", id="0", mkstream=True)
    now = redis_now_ms(r)
    for n in range(3):
        r.xadd(LENDING_INBOX, {"e": return_event(f"old-{n}")}, id=f"{now - 200_000}-{n}")
    for n in range(2):
        r.xadd(LENDING_INBOX, {"e": return_event(f"held-{n}")}, id=f"{now - 100_000}-{n}")
    old = read_as(r, "ghost-a", 3)
    r.xclaim(LENDING_INBOX, "lending", "ghost-a", 0, old, idle=60_000)  # idle a minute
    held = read_as(r, "ghost-b", 2)
    r.xadd(LENDING_INBOX, {"e": "not json"})
    r.xadd(LENDING_INBOX, {"e": json.dumps({"v": SCHEMA_VERSION, "type": "request"})})
    for n in range(4):
        r.xadd(LENDING_INBOX, {"e": return_event(f"new-{n}")})

    worker = start_worker(
        "lending",
        redis_server,
        name="w",
        library=LIB,
        metrics=True,
        extra=["--claim-idle-ms", "30000"],
    )
    port = worker.metrics_port
    assert port is not None

    def gauges() -> dict[str, float]:
        samples = scrape(port)
        names = (
            "claims_total",
            "stream_pending",
            "stream_lag",
            "oldest_pending_seconds",
            "dead_letter_entries",
            "worker_ready",
        )
        return {n: samples.get(metric(f"bookstream_{n}"), float("nan")) for n in names}

    def age_of(ms: int) -> float:
        return (redis_now_ms(r) - ms) / 1000

    def expect(expected: dict[str, float], pending_since_ms: int | None) -> None:
        """Poll until the gauges are these, the oldest pending entry's age within a
        housekeeping window of the age of the entry written at ``pending_since_ms``
        (exactly 0 when None: nothing pending)."""
        deadline = time.monotonic() + 15
        while True:
            got = gauges()
            age = got.pop("oldest_pending_seconds")
            if pending_since_ms is None:
                age_ok, want = age == 0, 0.0
            else:
                want = age_of(pending_since_ms)
                age_ok = want - 3 <= age <= want + 0.5
            if got == expected and age_ok:
                return
            assert time.monotonic() < deadline, f"{got} (oldest {age}) != {expected} ({want})"
            time.sleep(0.1)

    base = {"stream_lag": 0.0, "worker_ready": 1.0}
    expect(
        {**base, "claims_total": 3, "stream_pending": 2, "dead_letter_entries": 2},
        pending_since_ms=now - 100_000,
    )
    for n in range(3):
        assert json.loads(cast(bytes, r.get(KEYS.outcome(f"old-{n}"))))["status"] == "denied"
    assert all(r.exists(KEYS.outcome(f"new-{n}")) for n in range(4))
    assert not any(r.exists(KEYS.outcome(f"held-{n}")) for n in range(2))

    # ghost-b's entries go idle past the bound, and one more malformed entry arrives.
    r.xclaim(LENDING_INBOX, "lending", "ghost-b", 0, held, idle=60_000)
    r.xadd(LENDING_INBOX, {"e": "still not json"})
    expect(
        {**base, "claims_total": 5, "stream_pending": 0, "dead_letter_entries": 3},
        pending_since_ms=None,
    )
    assert all(r.exists(KEYS.outcome(f"held-{n}")) for n in range(2))

    # Redis goes away (a clean shutdown: the AOF has everything): the worker is not
    # ready meanwhile, and once Redis is back it is, with the same picture as before.
    redis_server.close_clients()
    redis_server.stop()
    wait_for(lambda: gauges()["worker_ready"] == 0, timeout=10)
    redis_server.start()
    expect(
        {**base, "claims_total": 5, "stream_pending": 0, "dead_letter_entries": 3},
        pending_since_ms=None,
    )
    assert scrape(port)[metric("bookstream_reconnects_total")] == 1
