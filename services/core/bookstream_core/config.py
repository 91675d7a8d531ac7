"""Configuration, built once at an entry point and passed down.

Every setting is a row of ``settings.SETTINGS``: a command-line option, a ``BOOKSTREAM_*``
environment variable (what a pod uses), or the default. Nothing here reads the
environment at import time: entry points call the ``*_from`` builders with
``os.environ`` explicitly. The operator reads a LibraryInstance, not options, and makes
its Redis settings with :func:`build_redis_settings` too
(``bookstream_operator/connection.py``).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from bookstream_core import settings as table
from bookstream_core.addresses import check_url, normalize_address, redacted
from bookstream_core.embedded import SOCKET_NAME
from bookstream_core.keys import check_library
from bookstream_core.passwords import read_password_file
from bookstream_core.settings import ConfigError
from bookstream_core.tls import check_tls_files
from bookstream_core.types import ServiceName

__all__ = ["ConfigError", "normalize_address", "read_password_file"]


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where Redis is. ``url=None`` means the embedded Redis under ``home``."""

    url: str | None = None
    #: The Redis ACL user; None: the default user.
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Read for every new connection, so a rotated password reaches running workers.
    password_file: str | None = None
    db: int | None = None
    ssl: bool = False
    #: TLS files (rediss:// only): the CA that verifies the server, the client's own
    #: certificate and key. Checked readable when the settings were built.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    home: Path = field(default_factory=lambda: default_home({}))
    #: The embedded Redis' AOF policy when it starts: everysec (loses at most about a
    #: second of writes on power failure) or always (loses nothing acknowledged).
    appendfsync: str = "everysec"
    client_name: str = "bookstream"

    def __repr__(self) -> str:
        # Settings get logged and shown in tracebacks: never the password, and the URL's
        # as ***. (A __repr__ of the class's own is kept by @dataclass.)
        shown = [f"url={redacted(self.url) if self.url else None!r}"]
        shown += [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.repr and f.name != "url"
        ]
        return f"RedisSettings({', '.join(shown)})"

    def describe(self) -> str:
        """The address without credentials, for logs and messages."""
        if self.url is None:  # read as "Redis at unix://... (embedded)" in messages
            return f"unix://{self.home / SOCKET_NAME} (embedded)"
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        host = parts.hostname or "localhost"
        return f"{parts.scheme}://{host}:{parts.port or 6379}"


def default_home(env: Mapping[str, str]) -> Path:
    """$BOOKSTREAM_HOME, else one embedded Redis per user whatever the current folder
    (the XDG state directory)."""
    home = table.text("home", None, env)
    if home:
        return absolute_home(Path(home).expanduser(), BY_HOME)
    state = env.get("XDG_STATE_HOME") or ""
    base = Path(state) if Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "bookstream"


BY_HOME = table.BY_KEY["home"].variable


def absolute_home(home: Path, name: str) -> Path:
    """A relative home would be another embedded Redis in every folder a command runs in,
    where the same one from every folder is promised."""
    if not home.is_absolute():
        raise ConfigError(f"{name} must be an absolute path, not {str(home)!r}")
    return home


def build_redis_settings(
    *,
    url: str | None = None,
    user: str | None = None,
    password: str | None = None,
    password_file: str | None = None,
    db: int | None = None,
    ssl: bool = False,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    home: Path | None = None,
    appendfsync: str = "everysec",
    names: Mapping[str, str] | None = None,
) -> RedisSettings:
    """The one place Redis settings are made (CLI, client, workers): checks and
    normalizes the address, checks the password file, applies TLS to a redis:// URL and
    checks the TLS files. ``names``: how each setting was given (``--tls-ca`` or its
    variable), for messages."""
    names = names or {}
    if password and password_file:
        raise ConfigError("give either a password or a password file, not both")
    if password_file:
        password_file = str(Path(password_file).expanduser().absolute())
        read_password_file(password_file)  # now, so that a bad path is a clear error
    if user is not None and not user.strip():
        raise ConfigError("the Redis user name is empty")
    normalized = normalize_address(url) if url is not None else None
    if ssl and (normalized is None or normalized.startswith("unix://")):
        raise ConfigError(
            f"{names.get('ssl') or '--ssl'} needs a TCP address (a redis:// URL or "
            "host:port): a unix socket has no TLS, nor has the embedded server"
        )
    if normalized and ssl and normalized.startswith("redis://"):
        normalized = "rediss://" + normalized[len("redis://") :]
    if normalized is not None:
        check_url(normalized)  # now: redis-py would refuse it at the first connection
    files = {"tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key}
    tls = normalized is not None and normalized.startswith("rediss://")
    check_tls_files(tls, files, names)
    return RedisSettings(
        url=normalized,
        user=user,
        password=password,
        password_file=password_file,
        db=db,
        ssl=ssl,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        home=absolute_home(home, "home") if home is not None else default_home(os.environ),
        appendfsync=appendfsync,
    )


@dataclass(frozen=True, slots=True)
class DomainSettings:
    """The library's rules; every lending worker of one library must agree on them."""

    user_limit: int = 5
    storage_capacity: int = 20


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """How a worker consumes its stream."""

    batch_size: int = 200
    in_flight: int = 3
    block_ms: int = 200
    claim_idle_ms: int = 10_000
    claim_interval_ms: int = 2_000
    max_deliveries: int = 5
    retention_s: int = 86_400
    events_maxlen: int = 100_000
    lock_ttl_ms: int = 15_000
    trim_interval_ms: int = 1_000
    #: A request waiting for shelving longer than this is denied (shelving_timeout) and
    #: its books go back: longer than a fetch's redeliveries take to be dead-lettered.
    request_deadline_s: int = 300
    #: Housekeeping that keeps failing this long stops the worker (non-zero exit).
    give_up_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    metrics_port: int | None = None
    #: Loopback unless told: the metrics and health port answers anyone who reaches it.
    metrics_host: str = "127.0.0.1"
    log_format: str = "console"
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    service: ServiceName
    name: str
    library: str = "main"
    force: bool = False
    redis: RedisSettings = field(default_factory=RedisSettings)
    domain: DomainSettings = field(default_factory=DomainSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)


def generated_worker_name(service: str) -> str:
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{service}-{host}-{os.getpid()}-{secrets.token_hex(2)}"


# --------------------------------------------------------------------------- parsing


def add_redis_arguments(
    parser: argparse.ArgumentParser, *, client: bool = True, program: str | None = None
) -> None:
    """The connection options (and ``--timeout`` for commands that wait on Redis), each
    with ``program``'s help."""
    group = parser.add_argument_group(
        "Redis connection (default: the embedded Redis, in $BOOKSTREAM_HOME, else "
        "$XDG_STATE_HOME/bookstream or ~/.local/state/bookstream)"
    )
    rows = table.rows("redis", "client") if client else table.rows("redis")
    table.add_options(group, rows, program)


#: What one setting gave: its text (None if not given) and the name it was given under.
Given = tuple[str | None, str]


def one_of(
    first: str, second: str, args: argparse.Namespace | None, env: Mapping[str, str]
) -> tuple[Given, Given]:
    """Two settings that say one thing two ways (a URL or an address; a password or a
    password file): either given as an option beats both variables, and two given the
    same way (two options, or two variables) conflict."""
    given = (table.raw(first, args, {}), table.raw(second, args, {}))
    if given[0][0] is None and given[1][0] is None:
        given = (table.raw(first, None, env), table.raw(second, None, env))
    (one, one_name), (other, other_name) = given
    if one is not None and other is not None:
        raise ConfigError(f"give either {one_name} or {other_name}, not both")
    return given


def redis_settings_from(args: argparse.Namespace | None, env: Mapping[str, str]) -> RedisSettings:
    (url, url_name), (address, address_name) = one_of("redis", "address", args, env)
    (password, _), (password_file, _) = one_of("password", "password_file", args, env)
    tls = {key: table.raw(key, args, env) for key in ("ssl", "tls_ca", "tls_cert", "tls_key")}
    try:
        return build_redis_settings(
            url=url if url is not None else address,
            user=table.text("redis_user", args, env),
            password=password,
            password_file=password_file,
            db=table.integer("db", args, env),
            ssl=table.flag("ssl", args, env),
            tls_ca=tls["tls_ca"][0],
            tls_cert=tls["tls_cert"][0],
            tls_key=tls["tls_key"][0],
            home=default_home(env),
            appendfsync=table.text("appendfsync", args, env) or "everysec",
            names={key: name for key, (_, name) in tls.items() if name},
        )
    except ConfigError as exc:
        name = url_name if url is not None else address_name
        raise ConfigError(f"{name}: {exc}" if name and "Redis" in str(exc) else str(exc)) from None


def library_from(args: argparse.Namespace | None, env: Mapping[str, str]) -> str:
    value, name = table.raw("library", args, env)
    try:
        return check_library(value if value is not None else "main")
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}" if name else str(exc)) from None


def timeout_from(args: argparse.Namespace | None, env: Mapping[str, str]) -> float:
    return table.seconds("timeout", args, env)


def add_worker_arguments(
    parser: argparse.ArgumentParser,
    services: tuple[ServiceName, ...] = ("lending", "shelving"),
    program: str | None = None,
) -> None:
    """A worker's options (with ``program``'s help); Lending's rules only where a Lending
    worker runs."""
    identity = ("name", "force")
    table.add_options(parser, [table.BY_KEY[key] for key in identity], program)
    add_redis_arguments(parser, client=False, program=program)
    group = parser.add_argument_group("worker")
    scopes: tuple[table.Scope, ...] = (
        ("worker", "lending", "lending_worker") if "lending" in services else ("worker",)
    )
    table.add_options(group, [s for s in table.rows(*scopes) if s.key not in identity], program)


def worker_settings_from(
    service: ServiceName, args: argparse.Namespace, env: Mapping[str, str]
) -> WorkerSettings:
    def number(key: str) -> int:
        value = table.integer(key, args, env)
        assert value is not None  # every worker number has a default
        return value

    runtime = RuntimeSettings(
        batch_size=number("batch_size"),
        in_flight=number("in_flight"),
        claim_idle_ms=number("claim_idle_ms"),
        max_deliveries=number("max_deliveries"),
        retention_s=number("retention"),
        lock_ttl_ms=number("lock_ttl_ms"),
        give_up_s=number("give_up_s"),
        request_deadline_s=number("request_deadline"),
    )
    observability = ObservabilitySettings(
        metrics_port=table.integer("metrics_port", args, env),
        metrics_host=table.text("metrics_host", args, env) or "127.0.0.1",
        log_format=table.text("log_format", args, env) or "console",
        log_level=table.text("log_level", args, env) or "info",
    )
    return WorkerSettings(
        service=service,
        name=worker_name_from(service, args, env),
        library=library_from(args, env),
        force=table.flag("force", args, env),
        redis=redis_settings_from(args, env),
        domain=domain_settings_from(args, env),
        runtime=runtime,
        observability=observability,
    )


def domain_settings_from(args: argparse.Namespace | None, env: Mapping[str, str]) -> DomainSettings:
    limit = table.integer("user_limit", args, env)
    capacity = table.integer("storage_capacity", args, env)
    assert limit is not None and capacity is not None  # both have defaults
    return DomainSettings(user_limit=limit, storage_capacity=capacity)


#: A worker's Redis connection is named after it (CLIENT SETNAME), and Redis refuses any
#: other character there: a worker with a space in its name retried its start forever.
WORKER_NAME = re.compile(r"[!-~]{1,200}")


def worker_name_from(service: str, args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """The worker's name, generated when none is given (an empty variable is none, an
    empty NAME is a name, and refused, as ``--library ''`` is)."""
    value, name = table.raw("name", args, env)
    if value is None:
        return generated_worker_name(service)
    try:
        return check_worker_name(value)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def check_worker_name(name: str) -> str:
    if not WORKER_NAME.fullmatch(name):
        raise ConfigError(
            "a worker name is 1-200 characters from '!' to '~' (printable ASCII, no space), "
            f"as Redis takes a connection's name; not {name!r}"
        )
    return name
