"""``bookstream bench``: its options and the run that ties the modules together.

Exit codes: 0 the run was correct, 1 it broke an invariant (or a worker failed),
2 bad options, 3 Redis unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec
import redis.asyncio as aioredis
from bookstream_core import settings
from bookstream_core.config import RedisSettings, build_redis_settings, redis_settings_from
from bookstream_core.connection import connect
from bookstream_core.keys import LibraryKeys
from bookstream_core.runner import install_uvloop
from redis.exceptions import ConnectionError as RedisConnectionError

from bookstream.bench import library, measure, workload
from bookstream.bench.correctness import check
from bookstream.bench.drain import RunFigures, Stalled, _figures, reset_stats, run_drain
from bookstream.bench.latency import offer, percentiles
from bookstream.bench.options import CONNECTION, WORKER_SETTINGS
from bookstream.bench.reference import Reference, run_reference
from bookstream.bench.report import build, table
from bookstream.bench.server import PrivateRedis, start_private_redis
from bookstream.bench.workers import WorkerSet, worker_environment
from bookstream.errors import BadInput, Unreachable

LIBRARY = "bench"
_STARTED: list[Callable[[], object]] = []  # stop functions of what this run started
EXIT_OK, EXIT_FAILED = 0, 1


def bench_command(args: argparse.Namespace) -> int:
    if args.events < 1 or args.workers < 1 or args.rate <= 0 or args.duration <= 0:
        raise BadInput("--events, --workers, --rate and --duration must be positive")
    if args.out is not None and not args.out.parent.is_dir():
        raise BadInput(f"--out: no folder {args.out.parent}")  # known now, not after the run
    # What the workers will run with (option, variable or default), checked once here.
    args.worker_settings = {k: settings.integer(k, args, os.environ) for k in WORKER_SETTINGS}
    args.short_retention = settings.raw("retention", args, os.environ)[0] is not None
    redis = _redis_settings(args)
    install_uvloop()
    # SIGTERM behaves like Ctrl-C; whatever happens, nothing this run started outlives it.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = asyncio.run(_bench(args, redis))
    finally:
        for cleanup in reversed(_STARTED):
            cleanup()
        _STARTED.clear()
    text = msgspec.json.encode(result).decode()
    if args.out is not None:
        try:
            args.out.write_text(text + "\n")
        except OSError as exc:
            raise BadInput(f"--out: cannot write {args.out}: {exc.strerror}") from None
    print(text if args.json else table(result))
    return EXIT_OK if result["correct"] else EXIT_FAILED


def _redis_settings(args: argparse.Namespace) -> RedisSettings | None:
    """How to reach --redis's Redis (options, then variables, as every command), checked
    before anything starts; None: the private server, which needs no connection settings
    (their variables are ignored, an option for it is a mistake)."""
    if args.redis is None:
        for key in CONNECTION:
            value, name = settings.raw(key, args, {})
            if value is not None:
                raise BadInput(f"{name} is for the Redis --redis names; the private one needs none")
        return None
    redis = redis_settings_from(args, os.environ)
    assert redis.url is not None
    if args.reference and (redis.password or redis.password_file or urlsplit(redis.url).password):
        raise BadInput(
            "--reference runs redis-benchmark, which takes a password only as an argument that "
            "every user of this machine can read (ps): measure it on a Redis without one"
        )
    return redis


async def _bench(args: argparse.Namespace, redis: RedisSettings | None) -> dict[str, Any]:
    private: PrivateRedis | None = None
    if redis is None:
        private = start_private_redis()
        _STARTED.append(private.stop)
        redis = build_redis_settings(url=private.url)
    r = connect(redis)
    try:
        try:
            server = await measure.info(r, "server")
        except (RedisConnectionError, OSError) as exc:
            # (describe: the address without the password the URL may carry)
            raise Unreachable(f"Redis at {redis.describe()} is unreachable: {exc}") from None
        return await _run(args, r, redis, server, private)
    finally:
        await r.aclose()
        if private is not None:
            private.stop()


async def _run(
    args: argparse.Namespace,
    r: aioredis.Redis,
    redis: RedisSettings,
    server: dict[str, Any],
    private: PrivateRedis | None,
) -> dict[str, Any]:
    keys = LibraryKeys(LIBRARY)
    load_at_start = list(os.getloadavg())  # other load on the machine skews every figure
    redis_pid = private.pid if private is not None else await measure.local_redis_pid(r)
    drain = args.mode == "drain"
    n = args.events if drain else max(1, int(args.rate * args.duration))
    events = workload.generate(n, args.seed)
    extra_args = [
        f"{settings.BY_KEY[key].flags[0]}={value}" for key, value in args.worker_settings.items()
    ]
    workers = WorkerSet(worker_environment(redis, os.environ), LIBRARY, args.workers, extra_args)
    _STARTED.append(workers.stop)
    show = not args.no_progress
    extra: dict[str, Any] = {}
    problems: list[str] = []
    try:
        if drain:
            figures = await run_drain(r, keys, events, workers, redis_pid, show_progress=show)
            extra["preload_s"] = round(figures.preload_s, 3)
            latency: dict[str, float | None] = percentiles([])
        else:
            figures, latency, extra = await _latency(args, r, keys, events, workers, redis_pid)
    except Stalled as exc:
        problems.append(str(exc))
        figures = RunFigures(0.0, 0, 0, 0, 0.0, {}, {}, {})
        latency = percentiles([])
    finally:
        problems += workers.stop()
    verdict = await check(r, keys, events, outcome_keys=not args.short_retention)
    reference: Reference | None = None
    if args.reference:
        reference = await run_reference(r, redis, redis_pid)
    return build(
        mode=args.mode,
        events=n,
        workers=args.workers,
        seed=args.seed,
        figures=figures,
        latency_ms=latency,
        verdict=verdict,
        problems=problems,
        server={
            "redis_version": server.get("redis_version", "?"),
            # (the address only: the results file must not carry a password)
            "redis": "private, unix socket, persistence off" if private else redis.describe(),
            "cores": os.cpu_count(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "python": sys.version.split()[0],
            "loadavg_at_start": load_at_start,
        },
        reference=reference,
        extra={
            **extra,
            "worker_retention_s": args.worker_settings["retention"],
            "worker_batch_size": args.worker_settings["batch_size"],
            "worker_in_flight": args.worker_settings["in_flight"],
        },
    )


async def _latency(
    args: argparse.Namespace,
    r: aioredis.Redis,
    keys: LibraryKeys,
    events: list[workload.WorkloadEvent],
    workers: WorkerSet,
    redis_pid: int | None,
) -> tuple[RunFigures, dict[str, float | None], dict[str, Any]]:
    await library.empty(r, keys)
    memory_before = await measure.used_memory(r)
    await library.create_groups(r, keys)
    workers.start()
    await workers.wait_ready(r)
    await reset_stats(r)
    pids = [w.pid for w in workers.processes]
    cpu0 = await measure.CpuSample.take(r, redis_pid, pids)
    client_cpu = time.process_time()
    offered = await offer(r, keys, events, args.rate, show_progress=not args.no_progress)
    client_cpu = time.process_time() - client_cpu
    # let the last reshelves reach the shelves before the audit
    for _ in range(500):
        if (await library.state(r, keys)).done(len(events)):
            break
        await asyncio.sleep(0.01)
    cpu1 = await measure.CpuSample.take(r, redis_pid, pids)
    figures = await _figures(r, workers, offered.seconds, cpu0, cpu1, memory_before, memory_before)
    extra = {
        "offered_rate": args.rate,
        "duration_s": args.duration,
        "send_seconds": round(offered.send_seconds, 3),
        "max_send_lag_ms": round(offered.max_send_lag_ms, 3),
        "outcomes_received": len(offered.latencies_ms),
        # the sender and the PSUBSCRIBE receiver share the machine with what they measure
        "bench_client_cores": round(client_cpu / offered.seconds, 3) if offered.seconds else None,
    }
    return figures, percentiles(offered.latencies_ms), extra
