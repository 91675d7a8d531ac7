"""Fixtures that start real things: redis-server processes on unix sockets.

The machine may already run a Redis on 6379; nothing here touches it.

pytest-asyncio (1.5) asks ``asyncio.get_event_loop()`` for the "previous" loop before each
async test; when no loop was ever set, Python 3.11 creates one there that nobody closes,
and its ResourceWarning fails a later test (warnings are errors). Declaring "no current
loop" once, here, makes that call raise instead, which pytest-asyncio expects.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import trustme
from bookstream_core.functions import DeadLetterRow
from bookstream_core.keys import LibraryKeys
from bookstream_core.streams import MAX_ID  # the largest stream id (a test's hostile id)

asyncio.set_event_loop(None)


@dataclass
class RedisServer:
    """A private redis-server; ``url`` is a unix:// URL, ``port`` an optional TCP port."""

    directory: Path
    socket: Path
    process: subprocess.Popen[bytes]
    port: int = 0
    appendfsync: str = "everysec"
    #: More redis-server arguments (a TLS port and its certificates).
    extra: list[str] = field(default_factory=list)
    clients: list[redis.Redis] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def tcp_url(self) -> str:
        assert self.port, "started without a TCP port"
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        """A sync client, closed when the fixture ends."""
        client = redis.Redis(unix_socket_path=str(self.socket))
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def start(self) -> None:
        """(Re)start on the same directory and socket: AOF brings the data back."""
        self.process = _spawn(self.directory, self.socket, self.port, self.appendfsync, self.extra)


def _spawn(
    directory: Path, sock: Path, port: int, appendfsync: str, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not on PATH: apt-get install redis-server (make test does)")
    args = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        appendfsync,
        "--daemonize",
        "no",
        "--logfile",
        str(directory / "redis.log"),
        *extra,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (directory / "redis.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"redis-server exited at start:\n{log}")
        try:
            with redis.Redis(unix_socket_path=str(sock), socket_timeout=1) as probe:
                probe.ping()
            return proc
        except (redis.ConnectionError, FileNotFoundError):
            time.sleep(0.02)
    proc.kill()
    pytest.fail("redis-server did not answer within 10 s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []
    dirs: list[str] = []

    def make(
        *, tcp: bool = False, appendfsync: str = "everysec", extra: list[str] | None = None
    ) -> RedisServer:
        # Short paths: unix socket paths are limited to ~107 bytes.
        directory = Path(tempfile.mkdtemp(prefix="bsr-", dir="/tmp"))
        dirs.append(str(directory))
        sock = directory / "r.sock"
        port = free_port() if tcp else 0
        extra = extra or []
        process = _spawn(directory, sock, port, appendfsync, extra)
        server = RedisServer(directory, sock, process, port, appendfsync, extra)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close_clients()
        server.kill()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def redis_server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_factory()


@pytest.fixture
def bookstream_env(tmp_path: Path) -> dict[str, str]:
    """Environment for child processes: no inherited BOOKSTREAM_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKSTREAM_")}
    env["BOOKSTREAM_HOME"] = str(tmp_path / "home")
    return env


# --------------------------------------------------------------------------- workers


@dataclass
class WorkerProcess:
    """A real ``bookstream-lending``/``bookstream-shelving`` process."""

    service: str
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int | None = None

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to clean up."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def terminate(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=timeout)
        return int(self.process.returncode)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"


def worker_command(service: str) -> str:
    exe = VENV_BIN / f"bookstream-{service}"
    if exe.exists():
        return str(exe)
    found = shutil.which(f"bookstream-{service}")
    if found is None:
        pytest.fail(f"bookstream-{service} is not installed (make install)")
    return found


@pytest.fixture
def start_worker(
    tmp_path: Path, bookstream_env: dict[str, str]
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes: ``start_worker("lending", server, name="l1", library="main")``;
    ``redis``: the URL the worker is given instead of the server's unix socket."""
    started: list[WorkerProcess] = []

    def start(
        service: str,
        server: RedisServer,
        *,
        name: str | None = None,
        library: str = "main",
        metrics: bool = False,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        redis: str | None = None,
    ) -> WorkerProcess:
        name = name or f"{service}-{len(started)}"
        log = tmp_path / f"{service}-{name}-{len(started)}.log"
        port = free_port() if metrics else None
        args = [worker_command(service), name, "--redis", redis or server.url]
        args += ["--library", library]
        args += ["--log-level", "info", "--claim-idle-ms", "2000"]
        if port is not None:
            args += ["--metrics-port", str(port)]
        args += extra or []
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env={**bookstream_env, **(env or {})}
            )
        worker = WorkerProcess(service, name, proc, log, port)
        started.append(worker)
        _wait_started(worker, server, library)
        return worker

    yield start
    for worker in started:
        worker.kill()


def _wait_started(worker: WorkerProcess, server: RedisServer, library: str) -> None:
    """A worker is up once it holds its name lock (the lock's value names its pid)."""
    key = f"bs:{{{library}}}:worker:{worker.service}:{worker.name}"
    client = server.client()  # closed with the server's other clients
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            pytest.fail(f"{worker.service} worker exited at start:\n{worker.output()}")
        value = client.get(key)
        # (a retirement's tombstone in the lock is no worker's description)
        if value not in (None, b"retired") and json.loads(value).get("pid") == worker.process.pid:
            return
        time.sleep(0.05)
    pytest.fail(f"{worker.service} worker {worker.name} did not start:\n{worker.output()}")


@pytest.fixture
async def aredis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client of a private Redis with bookstream's functions loaded."""
    from bookstream_core.functions import CoreFunctions, load_library
    from bookstream_lending.functions import SOURCE as LENDING
    from bookstream_shelving.functions import SOURCE as SHELVING

    client = aioredis.Redis(unix_socket_path=str(redis_server.socket))
    await CoreFunctions(client).load()
    await load_library(client, LENDING)
    await load_library(client, SHELVING)
    yield client
    await client.aclose()


async def client_without(server: RedisServer, command: str) -> aioredis.Redis:
    """A client whose ACL user may run every command but ``command`` (a missing right)."""
    admin = aioredis.Redis(unix_socket_path=str(server.socket))
    try:
        await admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", "w", "reset", "on", ">pw", "~*", "&*", "+@all", f"-{command}"
        )
    finally:
        await admin.aclose()
    return aioredis.Redis(unix_socket_path=str(server.socket), username="w", password="pw")


async def inject_fault(
    server: RedisServer, r: aioredis.Redis, fault: str, target: str
) -> aioredis.Redis | None:
    """Force one failure point of a function: ``stream`` (the stream ``target`` out of
    ids), ``type`` (the key ``target`` of the wrong type) or ``right`` (the command
    ``target`` refused by ACL: returns the client to call with, closed by the caller)."""
    if fault == "stream":
        await r.xadd(target, {"e": "{}"}, id=MAX_ID)
        return None
    if fault == "type":
        await r.delete(target)
        await r.set(target, "wrong")
        return None
    return await client_without(server, target)


async def dump_keys(r: aioredis.Redis, pattern: str) -> dict[bytes, object]:
    """Every key matching ``pattern`` with its DUMP: compared before and after a call."""
    keys = sorted([k async for k in r.scan_iter(match=pattern)])
    return {k: await r.dump(k) for k in keys}


@pytest.fixture
def served(redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]) -> RedisServer:
    """``redis_server`` with a Lending and a Shelving worker serving library ``main``."""
    start_worker("lending", redis_server)
    start_worker("shelving", redis_server)
    return redis_server


def run_cli(
    env: dict[str, str], *args: str, server: RedisServer | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the ``bookstream`` command (against ``server`` when given) and capture it."""
    argv = [str(VENV_BIN / "bookstream"), *args]
    if server is not None:
        argv += ["--redis", server.url]
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 15, interval: float = 0.05) -> None:
    """Poll until ``predicate()`` holds; fail the test if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def admit(r: redis.Redis, library: str = "main") -> int:
    """What a Lending worker's admission loop does: the submissions into the inbox (for
    tests that read the inbox with no worker running)."""
    keys = LibraryKeys(library)
    moved, _ = r.fcall("bs1_admit", 2, keys.submissions, keys.inbox("lending"), 512, 1 << 22)
    return int(moved)


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Certs:
    ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here
    stranger_cert: Path  # a client certificate the other CA signed
    stranger_key: Path
    folder: Path

    def options(self) -> list[str]:
        ca, cert, key = str(self.ca), str(self.client_cert), str(self.client_key)
        return ["--tls-ca", ca, "--tls-cert", cert, "--tls-key", key]

    def files(self) -> dict[str, Any]:
        """As ``build_redis_settings`` takes them."""
        return {"tls_ca": str(self.ca), "tls_cert": str(self.client_cert),
                "tls_key": str(self.client_key)}  # fmt: skip

    def variables(self) -> dict[str, str]:
        return {
            "BOOKSTREAM_REDIS_TLS_CA": str(self.ca),
            "BOOKSTREAM_REDIS_TLS_CERT": str(self.client_cert),
            "BOOKSTREAM_REDIS_TLS_KEY": str(self.client_key),
        }


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("tls")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("bookstream-client")
    stranger = other.issue_cert("bookstream-client")
    files = {
        "ca.pem": ca.cert_pem,
        "server.pem": server.cert_chain_pems[0],
        "server.key": server.private_key_pem,
        "client.pem": client.cert_chain_pems[0],
        "client.key": client.private_key_pem,
        "other-ca.pem": other.cert_pem,
        "stranger.pem": stranger.cert_chain_pems[0],
        "stranger.key": stranger.private_key_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(folder / name))
    f = folder.joinpath
    return Certs(f("ca.pem"), f("client.pem"), f("client.key"), f("other-ca.pem"),
                 f("stranger.pem"), f("stranger.key"), folder)  # fmt: skip


@dataclass(frozen=True)
class TlsRedis:
    server: RedisServer
    port: int

    def url(self, host: str = "127.0.0.1") -> str:
        return f"rediss://{host}:{self.port}"


@pytest.fixture
def tls_redis(redis_factory: Callable[..., RedisServer], certs: Certs) -> TlsRedis:
    """TLS on TCP only (no plain port): a connection that works went through TLS. It also
    listens on 127.0.0.2, an address its certificate does not name."""
    port = free_port()
    server = redis_factory(
        extra=[
            *("--tls-port", str(port), "--bind", "127.0.0.1", "127.0.0.2"),
            *("--tls-cert-file", str(certs.folder / "server.pem")),
            *("--tls-key-file", str(certs.folder / "server.key")),
            *("--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes"),
        ]
    )
    return TlsRedis(server, port)


def dead_letter_row(flat: list[bytes | str | int]) -> DeadLetterRow:
    """A bs1_dead_letter row from its ARGV slots as core.lua lists them (entry id, reason,
    deliveries, request id, kind, guard, digest, field count, n, n x (field, value))."""
    n = int(flat[8])
    pairs = [(bytes(str(flat[9 + 2 * i]), "utf-8") if not isinstance(flat[9 + 2 * i], bytes)
              else flat[9 + 2 * i], flat[10 + 2 * i]) for i in range(n)]  # fmt: skip
    e, reason, deliveries, rid, kind, guard, digest, count = flat[:8]
    return DeadLetterRow(e, str(reason), int(deliveries), str(rid), str(kind), str(guard),  # type: ignore[arg-type]
                         str(digest), int(count), pairs)  # type: ignore[arg-type]  # fmt: skip
