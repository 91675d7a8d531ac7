"""What a run costs: Redis memory and command statistics, CPU and RSS of processes.

CPU is read from ``/proc/PID/stat`` (user + system ticks) for every process on this
machine, Redis included when its pid is local; Redis' own ``INFO cpu`` is the fallback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after the command name: state is fields[0]; utime, stime are stat fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> tuple[int, int] | None:
    """(current RSS, peak RSS) of a process, in bytes."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, amount = line.split(":", 1)
                    values[name] = int(amount.split()[0]) * 1024
    except OSError:
        return None
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


async def info(r: aioredis.Redis, section: str) -> dict[str, Any]:
    result: dict[str, Any] = await r.info(section)
    return result


async def used_memory(r: aioredis.Redis) -> int:
    return int((await info(r, "memory"))["used_memory"])


async def redis_cpu_seconds(r: aioredis.Redis, pid: int | None) -> float:
    if pid is not None:
        local = cpu_seconds(pid)
        if local is not None:
            return local
    cpu = await info(r, "cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def local_redis_pid(r: aioredis.Redis) -> int | None:
    """Redis' pid when it runs on this machine (same process visible in /proc)."""
    server = await info(r, "server")
    pid = int(server.get("process_id", 0))
    exe = f"/proc/{pid}/exe"
    try:
        return pid if pid and "redis" in os.path.basename(os.readlink(exe)) else None
    except OSError:
        return None


async def command_stats(r: aioredis.Redis) -> dict[str, dict[str, float]]:
    """``INFO commandstats``: per command, calls, usec, usec_per_call."""
    raw = await info(r, "commandstats")
    stats: dict[str, dict[str, float]] = {}
    for key, value in raw.items():
        if key.startswith("cmdstat_") and isinstance(value, dict):
            stats[key[8:]] = {k: float(v) for k, v in value.items() if k in _STAT_FIELDS}
    return stats


_STAT_FIELDS = ("calls", "usec", "usec_per_call")


@dataclass
class CpuSample:
    """CPU seconds of Redis and of the workers at one moment."""

    redis: float
    workers: dict[int, float]

    @classmethod
    async def take(cls, r: aioredis.Redis, redis_pid: int | None, pids: list[int]) -> CpuSample:
        return cls(
            await redis_cpu_seconds(r, redis_pid), {pid: cpu_seconds(pid) or 0.0 for pid in pids}
        )
