"""The reference bound: ``redis-benchmark`` running lending's own function, pipelined.

It calls ``FCALL bs1_lending_apply`` with one representative event per call (a request
of one book by a random user with a random request id: the lookup, the reservation, the
request's state and the fetch sent to shelving), in a library of its own (``benchref``)
on the same server, and reports calls per second. No client can apply those events
faster than Redis executes that call; our events/s over it is the ratio we report.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from bookstream_core.config import DomainSettings, RedisSettings, RuntimeSettings
from bookstream_core.functions import CoreFunctions, load_library
from bookstream_core.keys import LibraryKeys
from bookstream_lending.functions import SOURCE as LENDING_SOURCE
from bookstream_lending.functions import LendingCall, apply_arguments
from redis.connection import parse_url

from bookstream.bench import library, measure
from bookstream.errors import BenchFailed
from bookstream.render import counted

REF_LIBRARY = "benchref"


@dataclass(frozen=True, slots=True)
class Reference:
    ops_per_s: float
    command: list[str]
    calls: int
    pipeline: int
    clients: int
    redis_cpu_us_per_call: float | None = None


def benchmark_executable() -> str:
    server = shutil.which("redis-server")
    if server is not None:
        sibling = Path(server).resolve().parent / "redis-benchmark"
        if sibling.exists():
            return str(sibling)
    found = shutil.which("redis-benchmark")
    if found is None:
        raise BenchFailed("redis-benchmark is not installed (it ships with redis-server)")
    return found


def _target(redis: RedisSettings) -> list[str]:
    """Where redis-benchmark connects. Never a password: it takes one only as an argument
    (-a; it ignores REDISCLI_AUTH), which every user of the machine can read, so the
    command refuses --reference for a Redis that needs one."""
    assert redis.url is not None
    parsed = urlsplit(redis.url)
    args: list[str] = []
    if parsed.scheme == "unix":
        args += ["-s", unquote(parsed.path)]
    else:
        args += ["-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 6379)]
        # The URL's db (path or ?db=) wins over --db, as in redis-py's from_url.
        db = parse_url(redis.url).get("db", redis.db)  # type: ignore[no-untyped-call]
        if db is not None:
            args += ["--dbnum", str(db)]
    if parsed.scheme == "rediss":
        args.append("--tls")
        files = ("--cacert", redis.tls_ca), ("--cert", redis.tls_cert), ("--key", redis.tls_key)
        args += [arg for option, path in files if path for arg in (option, path)]
    return args


def command(redis: RedisSettings, calls: int, pipeline: int, clients: int) -> list[str]:
    keys = LibraryKeys(REF_LIBRARY)
    # One request event per call, as a worker logging at warning level sends it;
    # redis-benchmark replaces __rand_int__ so that every call is a new request.
    event = LendingCall(
        "0-1", "request", "ref-__rand_int__", "user-__rand_int__", ["book-__rand_int__"]
    )
    # Not fenced: "0-1" was never pending, so its XACK (still sent, at the same cost)
    # finds nothing, and a fenced call would skip the work it is here to measure.
    args = apply_arguments(
        DomainSettings(), RuntimeSettings(), [event], with_outcomes=False, fence=False
    )
    fcall = [
        "FCALL", "bs1_lending_apply", "3",
        keys.inbox("lending"), keys.inbox("shelving"), keys.domain_events,
        *(str(a) for a in args),
    ]  # fmt: skip
    return [
        benchmark_executable(), *_target(redis),
        "-n", str(calls), "-c", str(clients), "-P", str(pipeline), "-r", "100000000",
        "--csv", *fcall,
    ]  # fmt: skip


async def run_reference(
    r: aioredis.Redis,
    redis: RedisSettings,
    redis_pid: int | None,
    *,
    calls: int = 200_000,
    pipeline: int = 32,
    clients: int = 4,
) -> Reference:
    keys = LibraryKeys(REF_LIBRARY)
    await CoreFunctions(r).load()
    await load_library(r, LENDING_SOURCE)
    await library.empty(r, keys)
    await library.create_groups(r, keys)
    argv = command(redis, calls, pipeline, clients)
    cpu0 = await measure.redis_cpu_seconds(r, redis_pid)
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, check=False, timeout=600
    )
    cpu_us = (await measure.redis_cpu_seconds(r, redis_pid) - cpu0) / calls * 1e6
    applied = int(await r.xlen(keys.inbox("shelving")))
    await library.empty(r, keys)
    if done.returncode != 0:
        raise BenchFailed(f"redis-benchmark failed: {done.stderr.strip()[-500:]}")
    if applied < calls // 2:  # each call pages one book: a fetch per (non-duplicate) call
        raise BenchFailed(
            "redis-benchmark's calls did not apply "
            f"({counted(applied, 'fetch', 'fetches')} for {counted(calls, 'call')}): "
            f"{done.stdout.strip()[-300:]} {done.stderr.strip()[-300:]}"
        )
    return Reference(_parse_rps(done.stdout), argv, calls, pipeline, clients, round(cpu_us, 1))


def _parse_rps(csv: str) -> float:
    """``--csv`` output: a header line, then ``"FCALL ...","123456.79",...``."""
    for line in csv.splitlines():
        cells = [c.strip('"') for c in line.split('","')]
        if len(cells) >= 2 and cells[0].lstrip('"').upper().startswith("FCALL"):
            return float(cells[1].strip('"'))
    raise BenchFailed(f"cannot read redis-benchmark's output: {csv[-300:]!r}")
