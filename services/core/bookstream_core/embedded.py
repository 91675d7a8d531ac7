"""The embedded Redis: a private ``redis-server`` on a unix socket under a state directory.

With no Redis named, every command starts it (or reuses it when it already runs): AOF on,
no TCP listener. It trusts only what it made and what belongs to the current user, and
checks before every use:

- the directory is a directory (not a symlink) owned by the user.
- every entry in it is the user's and no symlink (redis-server writes its pid file, log
  and AOF through whatever it finds); the socket is a socket, the pid file a regular file.
- only then is a directory group or others may use (a plain ``mkdir``) narrowed: their
  bits are removed, the rest (setgid) kept, and the entries checked again (one may have
  been added meanwhile). Narrowing rather than refusing: a lax directory of the user's own
  with nothing foreign in it is the common case (umask 022), and from then on nobody else
  can add to it; a directory that fails a check is refused and left as it was.
- the server answering on the socket keeps its data in this directory, its pid is the
  one in the pid file, and (where there is a /proc) that process is the redis-server
  executable, run by this user from this directory with this directory's socket.

Anything else is refused with one line naming the path. ``stop`` signals only a process
that passed these checks: never one a stale or forged pid file names.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bookstream_core.settings import ConfigError

SOCKET_NAME = "redis.sock"
PID_NAME, LOG_NAME, LOCK_NAME = "redis.pid", "redis.log", "start.lock"
#: What the embedded Redis leaves in its directory (redis-server's AOF directory and files
#: included): a directory that is not empty and holds none of them is someone else's
#: folder (BOOKSTREAM_HOME=. in a project), neither narrowed nor filled.
OWN_NAMES = frozenset(
    {SOCKET_NAME, PID_NAME, LOG_NAME, LOCK_NAME, "appendonlydir", "appendonly.aof",
     "dump.rdb"}
)  # fmt: skip
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin
PROC = Path("/proc")


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis cannot be started or trusted; the message says what to do."""


class EmbeddedHomeError(EmbeddedRedisError, ConfigError):
    """Its directory is no directory of the user's, or cannot be made or written: the
    setting is at fault (BOOKSTREAM_HOME, or the default it falls back to), as for any
    other bad setting (the CLI's exit 2), not the server."""


@dataclass(frozen=True, slots=True)
class _Found:
    """What runs in the directory. ``pid``: the embedded Redis, checked (``answering``
    on its socket or not); ``stray``: a live process the pid file names that is not it."""

    pid: int | None = None
    answering: bool = False
    stray: int | None = None


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
        return self.directory / PID_NAME

    def running(self) -> bool:
        return self.running_pid() is not None

    def running_pid(self) -> int | None:
        """The pid of the embedded Redis answering on its socket, checked; else None."""
        found = self._inspect()
        return found.pid if found.answering else None

    def ensure(self) -> str:
        """Start the server unless it already answers; return its URL."""
        if self._inspect().answering:
            return self.url
        exe = shutil.which("redis-server")
        if exe is None:
            raise EmbeddedRedisError(
                "redis-server is not installed. Install it (Debian/Ubuntu: "
                "sudo apt-get install redis-server; macOS: brew install redis) "
                "or point bookstream at a Redis with --redis URL."
            )
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise EmbeddedHomeError(
                f"the socket path {self.socket} is too long for a unix socket; "
                "set BOOKSTREAM_HOME to a shorter directory"
            )
        try:
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self.directory.mkdir(mode=0o700)
        except OSError as exc:  # a parent that is a file, or not writable
            raise self._unusable(f"cannot create {self.directory}: {exc.strerror}") from None
        self._check_directory()
        # Two commands starting at once: one starts it, the other waits and reuses it.
        try:
            lock = os.open(
                self.directory / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600
            )
        except OSError as exc:  # a directory of ours we may not write in (mode 0500)
            raise self._unusable(f"cannot write in {self.directory}: {exc.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = self._inspect()
            if found.stray is not None:  # its pid file would be overwritten: refused as by stop
                raise self._stray(found.stray)
            if found.pid is not None and not found.answering:
                raise EmbeddedRedisError(
                    f"the embedded Redis (pid {found.pid}) runs but does not answer on "
                    f"{self.socket}: stop it (bookstream embedded stop) and try again"
                )
            if not found.answering:
                self._start(exe)
        finally:
            os.close(lock)
        return self.url

    def _start(self, exe: str) -> None:
        # A stale socket of a server that died (checked: a socket of ours, silent).
        self.socket.unlink(missing_ok=True)
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
            "--logfile", str(self.directory / LOG_NAME),
        ]  # fmt: skip
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise EmbeddedRedisError(f"redis-server failed to start: {result.stderr.strip()}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._ask() is not None:
                return
            time.sleep(0.02)
        log = self.directory / LOG_NAME
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise EmbeddedRedisError(f"redis-server did not come up within 15 s; its log:\n{tail}")

    def stop(self) -> bool:
        """Shut the server down gracefully (SIGTERM: it flushes the AOF and exits)."""
        found = self._inspect()
        if found.pid is None:
            if found.stray is not None:
                raise self._stray(found.stray)
            return False
        try:
            os.kill(found.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            # Redis removes its pid file as the last step before exiting; the process
            # itself may linger as a zombie until whoever adopted it reaps it.
            if not self.pidfile.exists() or not _alive(found.pid):
                return True
            time.sleep(0.02)
        raise EmbeddedRedisError(f"redis-server (pid {found.pid}) did not stop within 15 s")

    # ------------------------------------------------------------------ the checks

    def _stray(self, pid: int) -> EmbeddedRedisError:
        return EmbeddedRedisError(
            f"the embedded Redis is not running, and {self.pidfile} names process {pid}, "
            "which is not it: left alone (remove the stale file)"
        )

    def _refuse(self, what: str) -> EmbeddedRedisError:
        return EmbeddedRedisError(
            f"not trusting the embedded Redis in {self.directory}: {what}; it trusts only "
            "what it made as you: remove that, or set BOOKSTREAM_HOME to another directory"
        )

    def _unusable(
        self,
        what: str,
        advice: str = "the embedded Redis needs a directory of yours: set BOOKSTREAM_HOME to "
        "one (or to a path where one can be made)",
    ) -> EmbeddedHomeError:
        return EmbeddedHomeError(f"BOOKSTREAM_HOME: {what}; {advice}")

    def _check_directory(self) -> bool:
        """Whether the directory exists; refuses one that is not the user's own or holds
        anything foreign, and only then narrows a lax mode (all on the directory opened,
        so no swap can intervene)."""
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._unusable(self._why_not_open(exc)) from None
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise self._unusable(f"{self.directory} belongs to uid {st.st_uid}, not you")
            names = set(os.listdir(fd))
            if names and not names & OWN_NAMES:
                raise self._unusable(
                    f"{self.directory} holds other files and nothing of an embedded Redis",
                    "set BOOKSTREAM_HOME to a new or empty directory (the embedded Redis "
                    "narrows its mode to 0700 and fills it)",
                )
            self._check_entries(fd)
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                os.fchmod(fd, mode & ~0o077)
                self._check_entries(fd)  # what was added before the narrowing took hold
        finally:
            os.close(fd)
        return True

    def _why_not_open(self, exc: OSError) -> str:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(self.directory):
            return f"{self.directory} is a symlink"  # O_NOFOLLOW
        if exc.errno == errno.ENOTDIR:  # it, or a folder on its path, is a file
            on_path = [*reversed(self.directory.parents), self.directory]
            path = next((p for p in on_path if os.path.lexists(p) and not p.is_dir()), None)
            return f"{path or self.directory} is not a directory"
        return f"cannot open {self.directory}: {exc.strerror}"  # a folder on its path: EACCES

    def _check_entries(self, fd: int) -> None:
        uid = os.geteuid()
        with os.scandir(fd) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                path = self.directory / entry.name
                if stat.S_ISLNK(st.st_mode):
                    raise self._refuse(f"{path} is a symlink")
                if st.st_uid != uid:
                    raise self._refuse(f"{path} belongs to uid {st.st_uid}, not you")
                if entry.name == SOCKET_NAME and not stat.S_ISSOCK(st.st_mode):
                    raise self._refuse(f"{path} is not a socket")
                if path == self.pidfile and not stat.S_ISREG(st.st_mode):
                    raise self._refuse(f"{path} is not a regular file")

    def _inspect(self) -> _Found:
        if not self._check_directory():
            return _Found()
        recorded = self._recorded_pid()
        answer = self._ask()
        if answer is not None:
            pid, data = answer
            if data != os.path.realpath(self.directory):
                raise self._refuse(f"the Redis on {self.socket} keeps its data in {data}")
            if recorded is not None and recorded != pid:
                raise self._refuse(
                    f"{self.pidfile} names process {recorded}, but the Redis on its socket "
                    f"is process {pid}"
                )
            if self._runs_here(pid) is False:
                raise self._refuse(f"process {pid} is no redis-server of yours started here")
            return _Found(pid=pid, answering=True)
        if recorded is None or not _alive(recorded):
            return _Found()
        # Silent, or its socket removed: ours only if /proc shows it is; else a stale
        # pid file whose number another process now has.
        if self._runs_here(recorded):
            return _Found(pid=recorded)
        return _Found(stray=recorded)

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _ask(self) -> tuple[int, str] | None:
        """The pid and data directory of the Redis answering on the socket, if one does."""
        if not self.socket.exists():
            return None
        try:
            with redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2) as r:
                pid = int(r.info("server")["process_id"])
                data = str(r.config_get("dir")["dir"])
        except (redis.RedisError, OSError):
            return None
        return pid, data

    def _runs_here(self, pid: int) -> bool | None:
        """Whether the process is the redis-server executable, run by this user, from
        this directory (the ``--dir`` it was started with), on this directory's socket;
        None where there is no /proc. (Any "redis" program used to pass: a ``redis-cli``
        started here was signalled by ``stop``.)"""
        if not (PROC / "self").exists():
            return None
        proc = PROC / str(pid)
        try:
            owner = proc.stat().st_uid
            exe = os.readlink(proc / "exe").removesuffix(" (deleted)")  # upgraded since
            cwd = os.readlink(proc / "cwd")
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:  # gone, or another user's
            return False
        return (
            owner == os.geteuid()
            and _is_redis_server(exe)
            and cwd == os.path.realpath(self.directory)
            and _serves(cmdline, str(self.socket))
        )


def _is_redis_server(exe: str) -> bool:
    """The redis-server executable: by name, or the file the one on PATH is (Debian's
    redis-server is a link to redis-check-rdb, which /proc names)."""
    if Path(exe).name == "redis-server":
        return True
    found = shutil.which("redis-server")
    return found is not None and os.path.realpath(found) == os.path.realpath(exe)


def _serves(cmdline: str, socket: str) -> bool:
    """Whether a redis-server's command line names ``socket``: as the arguments it was
    started with, or as the title Redis writes over them ("redis-server unixsocket:PATH")."""
    args = [arg for arg in cmdline.split("\0") if arg]
    if any(a == "--unixsocket" and b == socket for a, b in itertools.pairwise(args)):
        return True
    return f" unixsocket:{socket} " in f" {' '.join(args)} "


def _alive(pid: int) -> bool:
    try:
        with open(PROC / str(pid) / "stat") as proc_stat:
            return proc_stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
