"""The Prometheus metrics of real workers after a known sequence of events.

One lending and one shelving worker, each with a metrics port. A scripted sequence of
requests, returns, a duplicate and two malformed entries; then ``/metrics`` must show
exactly the counts the sequence implies, and ``/healthz`` and ``/readyz`` answer 200.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import cast

from bookstream import Client
from bookstream_core.keys import LibraryKeys
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RedisServer, WorkerProcess, wait_for
from tests.test_concurrency import Entries

LIB = "main"
KEYS = LibraryKeys(LIB)
LENDING_INBOX = KEYS.inbox("lending")
SHELVING_INBOX = KEYS.inbox("shelving")

Sample = tuple[str, frozenset[tuple[str, str]]]


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def scrape(port: int) -> dict[Sample, float]:
    status, body = http_get(port, "/metrics")
    assert status == 200
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return samples


def key(name: str, **labels: str) -> Sample:
    return (name, frozenset({"library": LIB, **labels}.items()))


def lending_expected() -> dict[Sample, float]:
    """What the scripted sequence in the test must leave on the lending worker."""
    return {
        key("bookstream_requests_total", status="accepted"): 4,
        key("bookstream_requests_total", status="denied"): 2,
        # the malformed request whose id could be read was answered `rejected`
        key("bookstream_requests_total", status="rejected"): 1,
        key("bookstream_returns_total", status="processed"): 1,
        key("bookstream_returns_total", status="denied"): 1,
        key("bookstream_denials_total", kind="request", reason="limit"): 1,
        key("bookstream_denials_total", kind="request", reason="none_available"): 1,
        key("bookstream_denials_total", kind="return", reason="not_held"): 1,
        key("bookstream_books_lent_total"): 6,
        key("bookstream_books_returned_total"): 1,
        key("bookstream_dead_letters_total", service="lending", reason="invalid_json"): 1,
        key("bookstream_dead_letters_total", service="lending", reason="invalid_event"): 1,
        # 6 requests applied + 1 duplicate entry seen (and ignored); 2 returns; 3 books
        # lists came back from shelving (the requests that paged books).
        key(
            "bookstream_events_processed_total",
            service="lending",
            stream=LENDING_INBOX,
            type="request",
        ): 7,
        key(
            "bookstream_events_processed_total",
            service="lending",
            stream=LENDING_INBOX,
            type="return",
        ): 2,
        key(
            "bookstream_events_processed_total",
            service="lending",
            stream=KEYS.replies,
            type="fetched",
        ): 3,
        key(
            "bookstream_events_processed_total",
            service="lending",
            stream=LENDING_INBOX,
            type="dead_letter",
        ): 2,
        key("bookstream_request_latency_seconds_count", kind="request"): 6,
        key("bookstream_request_latency_seconds_count", kind="return"): 2,
        key("bookstream_worker_ready", service="lending"): 1,
    }


def shelving_expected() -> dict[Sample, float]:
    return {
        key(
            "bookstream_events_processed_total",
            service="shelving",
            stream=SHELVING_INBOX,
            type="fetch",
        ): 3,
        key("bookstream_worker_ready", service="shelving"): 1,
    }


def wait_for_counts(
    port: int, expected: dict[Sample, float], timeout: float = 15
) -> dict[Sample, float]:
    """Counters are bumped right after the atomic call that publishes the outcome, so
    the client may see an outcome a moment before its count: poll briefly."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        actual = {k: samples.get(k, 0.0) for k in expected}
        if actual == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_metrics_after_a_known_sequence(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    lending = start_worker("lending", redis_server, name="lending-m", library=LIB, metrics=True)
    shelving = start_worker("shelving", redis_server, name="shelving-m", library=LIB, metrics=True)
    assert lending.metrics_port is not None and shelving.metrics_port is not None

    with Client(redis_server.url, LIB) as client:
        o = client.request("u1", ["a", "b"])  # from the shelves
        assert (o.status, o.lent) == ("accepted", ["a", "b"])
        second = client.request("u1", ["c"], request_id="metrics-second")
        assert (second.status, second.lent) == ("accepted", ["c"])
        o = client.request("u1", ["d", "e"])
        assert (o.status, len(o.books_in_hand)) == ("accepted", 5)
        o = client.request("u1", ["f"])
        assert (o.status, o.reason) == ("denied", "limit")
        o = client.request("u2", ["a"])
        assert (o.status, o.reason) == ("denied", "none_available")
        o = client.return_books("u1", ["a"])  # into the automated storage
        assert (o.status, o.returned) == ("processed", ["a"])
        o = client.return_books("u2", ["never-lent"])
        assert (o.status, o.reason) == ("denied", "not_held")
        o = client.request("u2", ["a"])  # from the automated storage: no fetch
        assert (o.status, o.lent) == ("accepted", ["a"])
        # A duplicate entry really written to the inbox: applied once, counted once.
        client.submit_request("u1", ["c"], request_id="metrics-second")
        assert client.outcome("metrics-second") == second

        r = redis_server.client()
        try:
            r.xadd(LENDING_INBOX, {"e": "garbage"})
            bad = {"v": 1, "type": "request", "id": "metrics-bad-1", "user": "u3", "books": []}
            r.xadd(LENDING_INBOX, {"e": json.dumps(bad)})
            rejected = client.outcome("metrics-bad-1", timeout=10)
            assert rejected.status == "rejected"
            assert rejected.kind == "request"
            assert rejected.reason is not None and rejected.reason.startswith("invalid_event")
            dead = cast(Entries, r.xrange(KEYS.dead_letters("lending")))
            reasons = sorted(fields[b"reason"].decode().split(":", 1)[0] for _, fields in dead)
            assert reasons == ["invalid_event", "invalid_json"]
        finally:
            r.close()
        assert client.user_books("u1") == ["b", "c", "d", "e"]
        assert client.user_books("u2") == ["a"]

    expected = lending_expected()
    samples = wait_for_counts(lending.metrics_port, expected)
    assert {k: samples.get(k, 0.0) for k in expected} == expected
    # Nothing else was counted: no other status, reason or event type.
    for name in (
        "bookstream_requests_total",
        "bookstream_returns_total",
        "bookstream_denials_total",
        "bookstream_dead_letters_total",
        "bookstream_events_processed_total",
    ):
        extra = {k: v for k, v in samples.items() if k[0] == name and k not in expected and v}
        assert not extra, extra
    assert samples[key("bookstream_request_latency_seconds_sum", kind="request")] > 0
    assert samples[key("bookstream_request_latency_seconds_bucket", kind="request", le="+Inf")] == 6
    assert samples[key("bookstream_processing_seconds_count", service="lending")] >= 1

    expected = shelving_expected()
    samples = wait_for_counts(shelving.metrics_port, expected)
    assert {k: samples.get(k, 0.0) for k in expected} == expected
    events = {k: v for k, v in samples.items() if k[0] == "bookstream_events_processed_total" and v}
    assert set(events) == {k for k in expected if k[0] == "bookstream_events_processed_total"}
    assert not any(k[0] == "bookstream_requests_total" and v for k, v in samples.items())

    for worker in (lending, shelving):
        assert worker.metrics_port is not None
        assert http_get(worker.metrics_port, "/healthz")[0] == 200
        assert http_get(worker.metrics_port, "/readyz")[0] == 200
        assert http_get(worker.metrics_port, "/nope")[0] == 404


def test_a_worker_that_loses_its_name_stops_at_once(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    """A worker whose name another worker took (--force, or it was frozen past its
    lock's TTL) stops consuming and exits non-zero, so its pod restarts: two consumers
    never share one name."""
    first = start_worker("lending", redis_server, name="dup", library=LIB, metrics=True)
    port = first.metrics_port
    assert port is not None
    # The name is taken before the group and functions are prepared: ready comes after.
    wait_for(lambda: http_get(port, "/readyz")[0] == 200, timeout=10)
    start_worker("lending", redis_server, name="dup", library=LIB, extra=["--force"])
    assert first.process.wait(timeout=20) == 1
    assert "was taken over by another worker" in first.output()
