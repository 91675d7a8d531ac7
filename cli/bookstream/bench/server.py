"""A private ``redis-server`` for one benchmark run: a temp dir, a unix socket, no TCP.

Persistence is off (no AOF, no RDB): the figures measure bookstream and Redis' command
execution, not the disk. The embedded Redis of ``bookstream serve`` runs with
``appendonly yes`` / ``appendfsync everysec``; benchmarks/README.md says what that costs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bookstream.errors import Unreachable


@dataclass
class PrivateRedis:
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.directory / "r.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def redis_server_executable() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise Unreachable("redis-server is not installed; install it or pass --redis URL")
    return exe


def start_private_redis() -> PrivateRedis:
    exe = redis_server_executable()
    directory = Path(tempfile.mkdtemp(prefix="bsbench-", dir="/tmp"))
    sock = directory / "r.sock"
    args = [
        exe,
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--logfile", str(directory / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = PrivateRedis(directory, proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with redis.Redis(unix_socket_path=str(sock), socket_timeout=1) as probe:
                probe.ping()
            return server
        except (redis.ConnectionError, FileNotFoundError):
            time.sleep(0.02)
    log = (directory / "redis.log").read_text(errors="replace")[-1500:]
    server.stop()
    raise Unreachable(f"the private redis-server did not start:\n{log}")
