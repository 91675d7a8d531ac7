"""Prometheus metrics every worker serves (names documented in README "Metrics").

One ``Metrics`` object per process, holding its own registry, so that two workers in
one process (``bookstream serve``) and tests do not collide on the global registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bookstream_core.events import SUBMISSIONS
from bookstream_core.types import DenialReason

M = TypeVar("M", Counter, Gauge, Histogram)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class Tally:
    """One batch's counter increments, added once per labelled child when it is done:
    every ``inc()`` takes a lock, and a batch has hundreds of outcomes but few children."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._counts: dict[tuple[Counter, tuple[str, ...]], float] = {}

    def add(self, metric: Counter, *labels: str, amount: float = 1.0) -> None:
        key = (metric, labels)  # the child is looked up once, at flush
        self._counts[key] = self._counts.get(key, 0.0) + amount

    def flush(self) -> None:
        for (metric, labels), amount in self._counts.items():
            self._metrics.child(metric, *labels).inc(amount)
        self._counts.clear()


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _children: dict[tuple[int, tuple[str, ...]], object] = field(
        default_factory=dict, init=False, repr=False
    )

    def child(self, metric: M, *labels: str) -> M:
        """The labelled child, looked up once per process: ``labels()`` costs several
        times what ``inc()`` does, and the hot path counts every outcome."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found  # type: ignore[return-value]

    def __post_init__(self) -> None:
        r = self.registry
        #: Each kind a client submits (events.SUBMISSIONS), its outcomes' counter,
        #: ``bookstream_<kind>s_total``: a new kind gets its own without a line here.
        self.outcomes_by_kind = {
            kind: Counter(
                f"bookstream_{kind}s",
                f"Book {kind}s by outcome status (accepted or processed, denied, rejected).",
                ["library", "status"],
                registry=r,
            )
            for kind in SUBMISSIONS
        }
        self.denials = Counter(
            "bookstream_denials",
            f"Denied requests and returns by reason ({', '.join(get_args(DenialReason))}).",
            ["library", "kind", "reason"],
            registry=r,
        )
        self.books_lent = Counter(
            "bookstream_books_lent", "Books lent to users.", ["library"], registry=r
        )
        self.books_returned = Counter(
            "bookstream_books_returned", "Books returned by users.", ["library"], registry=r
        )
        self.request_latency = Histogram(
            "bookstream_request_latency_seconds",
            "Request/return to outcome, from the inbox entry's time to the outcome (Redis clock).",
            ["library", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.processing = Histogram(
            "bookstream_processing_seconds",
            "Time to apply one batch of events (one atomic call per batch).",
            ["library", "service"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "bookstream_batch_size",
            "Events per applied batch.",
            ["library", "service"],
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.events = Counter(
            "bookstream_events_processed",
            "Events consumed, per stream and event type.",
            ["library", "service", "stream", "type"],
            registry=r,
        )
        self.dead_letters = Counter(
            "bookstream_dead_letters",
            "Entries moved to the dead-letter stream, by reason.",
            ["library", "service", "reason"],
            registry=r,
        )
        self.claims = Counter(
            "bookstream_claims",
            "Entries claimed from idle or dead consumers.",
            ["library", "service"],
            registry=r,
        )
        self.reconnects = Counter(
            "bookstream_reconnects",
            "Times the worker lost Redis and got it back.",
            ["library", "service"],
            registry=r,
        )
        self.lag = Gauge(
            "bookstream_stream_lag",
            "Entries in the inbox not yet delivered to the service's group.",
            ["library", "service"],
            registry=r,
        )
        self.pending = Gauge(
            "bookstream_stream_pending",
            "Entries delivered to the group but not yet acknowledged.",
            ["library", "service"],
            registry=r,
        )
        self.oldest_pending = Gauge(
            "bookstream_oldest_pending_seconds",
            "Age of the oldest unacknowledged entry of the group.",
            ["library", "service"],
            registry=r,
        )
        self.dead_letter_length = Gauge(
            "bookstream_dead_letter_entries",
            "Entries in the service's dead-letter stream.",
            ["library", "service"],
            registry=r,
        )
        self.ready = Gauge(
            "bookstream_worker_ready",
            "1 while the worker holds its name and reaches Redis, else 0.",
            ["library", "service"],
            registry=r,
        )
