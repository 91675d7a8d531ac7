"""The embedded Redis: a private ``redis-server`` on a unix socket under a state directory.

With no Redis named, every command starts it (or reuses it when it already runs):
AOF on, no TCP listener, the directory mode 0700 so only its owner reaches the socket.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

SOCKET_NAME = "redis.sock"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis cannot be started; the message says what to do."""


@dataclass(frozen=True, slots=True)
class EmbeddedRedis:
    home: Path
    appendfsync: str = "everysec"

    @property
    def directory(self) -> Path:
        return self.home.absolute()

    @property
    def socket(self) -> Path:
        return self.directory / SOCKET_NAME

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2).ping())
        except (redis.RedisError, OSError):
            return False

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def ensure(self) -> str:
        """Start the server unless it already answers; return its URL."""
        if self.running():
            return self.url
        exe = shutil.which("redis-server")
        if exe is None:
            raise EmbeddedRedisError(
                "redis-server is not installed. Install it (Debian/Ubuntu: "
                "sudo apt-get install redis-server; macOS: brew install redis) "
                "or point bookstream at a Redis with --redis URL."
            )
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"the socket path {self.socket} is too long for a unix socket; "
                "set BOOKSTREAM_HOME to a shorter directory"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        # Two commands starting at once: one starts it, the other waits and reuses it.
        with open(self.directory / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.running():
                self._start(exe)
        return self.url

    def _start(self, exe: str) -> None:
        if self.socket.exists():
            self.socket.unlink()  # stale socket of a server that died
        args = [
            exe,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "yes",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise EmbeddedRedisError(f"redis-server failed to start: {result.stderr.strip()}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.running():
                return
            time.sleep(0.02)
        log = self.directory / "redis.log"
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise EmbeddedRedisError(f"redis-server did not come up within 15 s; its log:\n{tail}")

    def stop(self) -> bool:
        """Shut the server down gracefully (SIGTERM: it flushes the AOF and exits)."""
        if not self.running():
            return False
        pid = self.pid()
        if pid is None:
            raise EmbeddedRedisError(f"no pid file in {self.directory}; stop redis-server by hand")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            # Redis removes its pid file as the last step before exiting; the process
            # itself may linger as a zombie until whoever adopted it reaps it.
            if not self.pidfile.exists() or not _alive(pid):
                return True
            time.sleep(0.02)
        raise EmbeddedRedisError(f"redis-server (pid {pid}) did not stop within 15 s")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
