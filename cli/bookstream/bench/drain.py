"""Drain mode: preload N events, start K workers of each service, time until every event
has its outcome and no entry is pending or unread in either inbox."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from bookstream_core.keys import LibraryKeys
from redis.exceptions import ResponseError

from bookstream.bench import library, measure
from bookstream.bench.progress import Progress
from bookstream.bench.workers import WorkerSet
from bookstream.bench.workload import WorkloadEvent

STALL_S = 60.0  # no progress for this long: the run has failed
POLL_S = 0.01


class Stalled(RuntimeError):
    """The workers stopped making progress before every event had its outcome."""


@dataclass
class RunFigures:
    """What one timed phase measured (drain or latency)."""

    seconds: float
    memory_before: int
    memory_loaded: int
    memory_after: int
    redis_cpu_s: float
    worker_cpu_s: dict[str, float]
    worker_rss: dict[str, list[tuple[int, int]]]
    commandstats: dict[str, dict[str, float]]
    preload_s: float = 0.0


async def reset_stats(r: aioredis.Redis) -> None:
    with contextlib.suppress(ResponseError):  # a managed Redis may refuse CONFIG
        await r.config_resetstat()


async def run_drain(
    r: aioredis.Redis,
    keys: LibraryKeys,
    events: Sequence[WorkloadEvent],
    workers: WorkerSet,
    redis_pid: int | None,
    *,
    show_progress: bool,
) -> RunFigures:
    await library.empty(r, keys)
    memory_before = await measure.used_memory(r)
    await library.create_groups(r, keys)
    started = time.monotonic()
    await library.preload(r, keys, events)
    preload_s = time.monotonic() - started
    memory_loaded = await measure.used_memory(r)
    await reset_stats(r)

    workers.start()
    t0 = await workers.wait_ready(r)
    cpu0 = await measure.CpuSample.take(r, redis_pid, [w.pid for w in workers.processes])
    bar = Progress(len(events), "drain", enabled=show_progress)
    n = len(events)
    last_seen, last_change = -1, time.monotonic()
    while True:
        st = await library.state(r, keys)
        now = time.monotonic()
        if st.done(n):
            break
        if st.outcomes != last_seen:
            last_seen, last_change = st.outcomes, now
        elif now - last_change > STALL_S:
            bar.close(st.outcomes)
            raise Stalled(f"no progress for {STALL_S:.0f} s at {st.outcomes:,}/{n:,} outcomes")
        bar.update(st.outcomes)
        await asyncio.sleep(POLL_S)
    seconds = now - t0
    cpu1 = await measure.CpuSample.take(r, redis_pid, [w.pid for w in workers.processes])
    bar.close(n)
    return await _figures(r, workers, seconds, cpu0, cpu1, memory_before, memory_loaded, preload_s)


async def _figures(
    r: aioredis.Redis,
    workers: WorkerSet,
    seconds: float,
    cpu0: measure.CpuSample,
    cpu1: measure.CpuSample,
    memory_before: int,
    memory_loaded: int,
    preload_s: float = 0.0,
) -> RunFigures:
    worker_cpu: dict[str, float] = {"lending": 0.0, "shelving": 0.0}
    rss: dict[str, list[tuple[int, int]]] = {"lending": [], "shelving": []}
    for w in workers.processes:
        worker_cpu[w.service] += cpu1.workers.get(w.pid, 0.0) - cpu0.workers.get(w.pid, 0.0)
        sample = measure.rss_bytes(w.pid)
        if sample is not None:
            rss[w.service].append(sample)
    return RunFigures(
        seconds=seconds,
        memory_before=memory_before,
        memory_loaded=memory_loaded,
        memory_after=await measure.used_memory(r),
        redis_cpu_s=cpu1.redis - cpu0.redis,
        worker_cpu_s=worker_cpu,
        worker_rss=rss,
        commandstats=await measure.command_stats(r),
        preload_s=preload_s,
    )
