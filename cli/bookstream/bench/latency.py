"""Latency mode: an open-loop sender at a fixed rate, and request -> outcome percentiles.

Open loop: event i is due at ``t0 + i / rate`` and is sent then whether or not earlier
ones have been answered, so a slow system cannot hide its latency by slowing the sender
(no coordinated omission). Each latency is measured from the *scheduled* send time to
the moment the outcome's Pub/Sub message arrived on a dedicated PSUBSCRIBE connection.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from bookstream_core.keys import LibraryKeys

from bookstream.bench.progress import Progress
from bookstream.bench.workload import WorkloadEvent

GRACE_S = 30.0  # how long to wait for the last outcomes after the last send
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


@dataclass
class Offered:
    latencies_ms: list[float] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    send_seconds: float = 0.0
    seconds: float = 0.0  # first scheduled send -> last outcome
    max_send_lag_ms: float = 0.0  # how late the sender itself ever was


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles and the maximum, in the values' unit (None if empty)."""
    if not values:
        return {**dict.fromkeys(PERCENTILES), "max": None}
    ordered = sorted(values)
    result: dict[str, float | None] = {}
    for name, p in PERCENTILES.items():
        rank = max(1, math.ceil(round(p * len(ordered) / 100, 9)))
        result[name] = round(ordered[rank - 1], 3)
    result["max"] = round(ordered[-1], 3)
    return result


async def offer(
    r: aioredis.Redis,
    keys: LibraryKeys,
    events: Sequence[WorkloadEvent],
    rate: float,
    *,
    show_progress: bool,
) -> Offered:
    result = Offered()
    due: dict[str, float] = {}
    prefix = keys.outcome("").encode()
    pubsub = r.pubsub()
    await pubsub.psubscribe(keys.outcome("*"))
    bar = Progress(len(events), f"offer {rate:,.0f}/s", enabled=show_progress)
    received = 0
    all_sent = asyncio.Event()
    finished = asyncio.Event()
    last_arrival = 0.0

    async def receive() -> None:
        nonlocal received, last_arrival
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                if all_sent.is_set() and received >= len(events):
                    break
                continue
            arrived = time.monotonic()
            channel: bytes = message["channel"]
            rid = channel[len(prefix) :].decode()
            scheduled = due.pop(rid, None)
            if scheduled is None:
                continue  # not ours (or a duplicate announcement)
            result.latencies_ms.append((arrived - scheduled) * 1000)
            received += 1
            last_arrival = arrived
            bar.update(received)
            if all_sent.is_set() and received >= len(events):
                break
        finished.set()

    receiver = asyncio.create_task(receive())
    submissions = keys.submissions
    interval = 1.0 / rate
    t0 = time.monotonic() + 0.05
    i = 0
    while i < len(events):
        now = time.monotonic()
        first = i
        while i < len(events) and t0 + i * interval <= now:
            due[events[i].request_id] = t0 + i * interval
            i += 1
        if i > first:
            result.max_send_lag_ms = max(
                result.max_send_lag_ms, (now - (t0 + first * interval)) * 1000
            )
            async with r.pipeline(transaction=False) as pipe:
                for event in events[first:i]:
                    # Through the door, as every client submits (its checks included).
                    pipe.execute_command("FCALL", "bs1_submit", 1, submissions, event.payload)
                await pipe.execute()
        if i < len(events):
            await asyncio.sleep(max(0.0, t0 + i * interval - time.monotonic()))
    result.send_seconds = time.monotonic() - t0
    all_sent.set()
    try:
        await asyncio.wait_for(finished.wait(), timeout=GRACE_S)
    except TimeoutError:
        receiver.cancel()
    await asyncio.gather(receiver, return_exceptions=True)
    await pubsub.punsubscribe()
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    bar.close(received)
    result.missing = sorted(due)
    result.seconds = (last_arrival or time.monotonic()) - t0
    return result
