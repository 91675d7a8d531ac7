"""The worker processes a benchmark starts: K of each service, stopped with SIGTERM.

They are the production entry points (``bookstream-lending NAME ...``), one process each,
exactly as a pod runs them: the connection in the variables a pod gets, never in
their arguments, which every user of the machine can read (``ps``); logging at
``warning`` so that no line per outcome is written.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from bookstream_core import settings as table
from bookstream_core.config import RedisSettings
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


def worker_environment(redis: RedisSettings, inherited: Mapping[str, str]) -> dict[str, str]:
    """The workers' environment: the run's connection as the variables a pod gets (the
    environment of a process only its user and root may read), a password written into
    the URL moved out of it. Inherited connection variables are dropped: they would add
    to this run's or conflict with it."""
    assert redis.url is not None
    url = urlsplit(redis.url)
    query = f"?{url.query}" if url.query else ""
    password = unquote(url.password) if url.password else redis.password
    values = {
        "redis": f"{url.scheme}://{url.netloc.rpartition('@')[2]}{url.path}{query}",
        "redis_user": unquote(url.username) if url.username else redis.user,
        # A file is read again for every connection: passed as itself, not its content.
        "password": None if redis.password_file else password,
        "password_file": redis.password_file,
        "db": None if redis.db is None else str(redis.db),
        "tls_ca": redis.tls_ca,
        "tls_cert": redis.tls_cert,
        "tls_key": redis.tls_key,
    }
    dropped = {row.variable for row in table.rows("redis")}
    env = {name: value for name, value in inherited.items() if name not in dropped}
    env.update({table.BY_KEY[k].variable: v for k, v in values.items() if v is not None})
    return env


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
    #: The workers' environment (``worker_environment``).
    env: dict[str, str]
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
                args = [executable(service), name, "--library", self.library]
                args += ["--log-level", "warning", "--force", *self.extra]
                with open(log, "wb") as out:
                    proc = subprocess.Popen(
                        args, stdout=out, stderr=subprocess.STDOUT, env=self.env
                    )
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
