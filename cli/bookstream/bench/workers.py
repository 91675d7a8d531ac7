"""The worker processes a benchmark starts: K of each service, stopped with SIGTERM.

They are the production entry points (``bookstream-lending NAME --redis URL ...``), one
process each, exactly as a pod runs them; logging at ``warning`` so that no line per
outcome is written.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_core.types import ServiceName

from bookstream.errors import BenchFailed, Unreachable


def executable(service: str) -> str:
    local = Path(sys.executable).parent / f"bookstream-{service}"
    if local.exists():
        return str(local)
    found = shutil.which(f"bookstream-{service}")
    if found is None:
        raise Unreachable(f"bookstream-{service} is not installed (make install)")
    return found


@dataclass
class WorkerProcess:
    service: ServiceName
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@dataclass
class WorkerSet:
    url: str
    library: str
    count: int
    extra: list[str] = field(default_factory=list)
    processes: list[WorkerProcess] = field(default_factory=list)
    logdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bsbench-logs-")))

    def start(self) -> None:
        for i in range(1, self.count + 1):
            for service in SERVICES:
                name = f"bench-{service}-{i}"
                log = self.logdir / f"{name}.log"
                args = [executable(service), name, "--redis", self.url, "--library", self.library]
                args += ["--log-level", "warning", "--force", *self.extra]
                with open(log, "wb") as out:
                    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
                self.processes.append(WorkerProcess(service, name, proc, log))

    async def wait_ready(self, r: aioredis.Redis, timeout: float = 30.0) -> float:
        """Wait until every worker holds its name; the monotonic time the first did."""
        keys = LibraryKeys(self.library)
        locks = [keys.worker_lock(w.service, w.name) for w in self.processes]
        first: float | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for w in self.processes:
                if w.process.poll() is not None:
                    raise BenchFailed(f"{w.name} exited at start:\n{w.output()}")
            held = int(await r.exists(*locks))
            if held and first is None:
                first = time.monotonic()
            if held == len(locks):
                return first or time.monotonic()
            await asyncio.sleep(0.005)
        raise BenchFailed("workers did not start in time")

    def stop(self, timeout: float = 20.0) -> list[str]:
        """SIGTERM every worker and wait; the problems seen (a non-zero exit, a kill)."""
        problems: list[str] = []
        for w in self.processes:
            if w.process.poll() is None:
                w.process.terminate()
        deadline = time.monotonic() + timeout
        for w in self.processes:
            try:
                code = w.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait(timeout=5)
                problems.append(f"{w.name} did not stop on SIGTERM; killed")
                continue
            if code != 0:
                problems.append(f"{w.name} exited with {code}:\n{w.output()}")
        shutil.rmtree(self.logdir, ignore_errors=True)
        return problems

    def pids(self, service: str) -> list[int]:
        return [w.pid for w in self.processes if w.service == service]
