"""Configuration, built once at an entry point and passed down.

Every setting comes from (highest first) a command-line option, a ``BOOKSTREAM_*``
environment variable (what a pod uses), or the default. Nothing here reads the
environment at import time: entry points call the ``from_*`` constructors with
``os.environ`` explicitly.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from bookstream_core.keys import check_library
from bookstream_core.types import ServiceName

ENV_PREFIX = "BOOKSTREAM_"


class ConfigError(ValueError):
    """A setting is malformed; the message names the option and the variable."""


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where Redis is. ``url=None`` means the embedded Redis under ``home``."""

    url: str | None = None
    password: str | None = None
    db: int | None = None
    ssl: bool = False
    home: Path = Path(".bookstream")
    #: The embedded Redis' AOF policy when it starts: everysec (loses at most about a
    #: second of writes on power failure) or always (loses nothing acknowledged).
    appendfsync: str = "everysec"
    client_name: str = "bookstream"

    @classmethod
    def from_dsn(cls, dsn: str, **kwargs: object) -> RedisSettings:
        """``redis://``, ``rediss://``, ``unix://`` URLs, a socket path, or ``host[:port]``."""
        return cls(url=normalize_address(dsn), **kwargs)  # type: ignore[arg-type]

    @property
    def embedded(self) -> bool:
        return self.url is None

    def describe(self) -> str:
        """The address without credentials, for logs and messages."""
        if self.url is None:
            return f"embedded Redis in {self.home}"
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        host = parts.hostname or "localhost"
        return f"{parts.scheme}://{host}:{parts.port or 6379}"


def normalize_address(address: str) -> str:
    """Accept what the original sample's ``-a`` accepted, and URLs."""
    address = address.strip()
    if not address:
        raise ConfigError("empty Redis address")
    if "://" in address:
        scheme = address.split("://", 1)[0]
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"unsupported Redis URL scheme {scheme!r} (redis, rediss, unix)")
        return address
    if address.startswith(("/", ".")):
        return f"unix://{Path(address).absolute()}"
    host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    if port and not port.isdigit():
        raise ConfigError(f"invalid port in Redis address {address!r}")
    return f"redis://{host or 'localhost'}:{port or 6379}"


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
    metrics_host: str = "0.0.0.0"
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

    def with_name(self, name: str) -> WorkerSettings:
        return replace(self, name=name)


def generated_worker_name(service: str) -> str:
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{service}-{host}-{os.getpid()}-{secrets.token_hex(2)}"


# --------------------------------------------------------------------------- parsing


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(ENV_PREFIX + name)
    return value if value not in (None, "") else None


def _int(value: str | int | None, what: str, minimum: int = 0) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{what} must be at least {minimum}, not {number}")
    return number


def _bool(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Redis connection (default: the embedded Redis under $BOOKSTREAM_HOME)"
    )
    group.add_argument(
        "--redis", metavar="URL", help="redis://, rediss:// or unix:// URL [BOOKSTREAM_REDIS_URL]"
    )
    group.add_argument(
        "-a", "--address", help="host[:port] or unix socket path [BOOKSTREAM_REDIS_ADDRESS]"
    )
    group.add_argument("--db", help="database number [BOOKSTREAM_REDIS_DB]")
    group.add_argument(
        "--password",
        help="password (prefer --password-file) [BOOKSTREAM_REDIS_PASSWORD]",
    )
    group.add_argument(
        "--password-file",
        metavar="PATH",
        help="file holding the password [BOOKSTREAM_REDIS_PASSWORD_FILE]",
    )
    group.add_argument(
        "--ssl", action="store_true", default=None, help="use TLS [BOOKSTREAM_REDIS_SSL]"
    )
    group.add_argument("--library", help="library namespace, default 'main' [BOOKSTREAM_LIBRARY]")


def redis_settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> RedisSettings:
    # An option names the server outright; only without one do the variables count.
    url, address = args.redis, args.address
    if not url and not address:
        url, address = _env(env, "REDIS_URL"), _env(env, "REDIS_ADDRESS")
    if url and address:
        raise ConfigError("give either --redis URL or -a/--address, not both")
    target = url or address
    password = args.password or _env(env, "REDIS_PASSWORD")
    password_file = args.password_file or _env(env, "REDIS_PASSWORD_FILE")
    if password_file and not password:
        try:
            password = Path(password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read password file {password_file}: {exc.strerror}"
            ) from None
    ssl = bool(args.ssl) or _bool(_env(env, "REDIS_SSL"))
    db = _int(args.db if args.db is not None else _env(env, "REDIS_DB"), "--db")
    home = Path(_env(env, "HOME") or ".bookstream")
    appendfsync = _env(env, "APPENDFSYNC") or "everysec"
    if appendfsync not in ("everysec", "always"):
        raise ConfigError(f"BOOKSTREAM_APPENDFSYNC must be everysec or always, not {appendfsync!r}")
    normalized = normalize_address(target) if target else None
    if normalized and ssl and normalized.startswith("redis://"):
        normalized = "rediss://" + normalized[len("redis://") :]
    return RedisSettings(
        url=normalized, password=password, db=db, ssl=ssl, home=home, appendfsync=appendfsync
    )


def library_from(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    library = getattr(args, "library", None) or _env(env, "LIBRARY") or "main"
    try:
        return check_library(library)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        help="unique name for this worker (generated if omitted) [BOOKSTREAM_WORKER_NAME]",
    )
    parser.add_argument(
        "-f",
        "--force",
        action="store_true",
        default=None,
        help="start even if another worker holds this name [BOOKSTREAM_FORCE]",
    )
    add_redis_arguments(parser)
    group = parser.add_argument_group("worker")
    group.add_argument(
        "--metrics-port", help="serve /metrics, /healthz, /readyz here [BOOKSTREAM_METRICS_PORT]"
    )
    group.add_argument("--log-format", choices=["console", "json"], help="[BOOKSTREAM_LOG_FORMAT]")
    group.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="[BOOKSTREAM_LOG_LEVEL]"
    )
    group.add_argument(
        "--user-limit", help="books one user may hold, default 5 [BOOKSTREAM_USER_LIMIT]"
    )
    group.add_argument(
        "--storage-capacity",
        help="automated storage capacity, default 20 [BOOKSTREAM_STORAGE_CAPACITY]",
    )
    group.add_argument(
        "--batch-size", help="entries read per batch, default 200 [BOOKSTREAM_BATCH_SIZE]"
    )
    group.add_argument(
        "--in-flight",
        help="batches applied at once by one worker, default 3 [BOOKSTREAM_IN_FLIGHT]",
    )
    group.add_argument(
        "--claim-idle-ms",
        help="claim entries idle this long, default 10000 [BOOKSTREAM_CLAIM_IDLE_MS]",
    )
    group.add_argument(
        "--max-deliveries",
        help="dead-letter after this many deliveries, default 5 [BOOKSTREAM_MAX_DELIVERIES]",
    )
    group.add_argument(
        "--retention",
        help="seconds outcomes and idempotency records are kept, default 86400 "
        "[BOOKSTREAM_RETENTION_S]",
    )
    group.add_argument(
        "--request-deadline",
        help="seconds a request may wait for shelving before it is denied, default 300 "
        "[BOOKSTREAM_REQUEST_DEADLINE_S]",
    )


def _pick(args: argparse.Namespace, attr: str, env: Mapping[str, str], var: str) -> str | None:
    value = getattr(args, attr, None)
    return str(value) if value is not None else _env(env, var)


def worker_settings_from(
    service: ServiceName, args: argparse.Namespace, env: Mapping[str, str]
) -> WorkerSettings:
    d, r, o = DomainSettings(), RuntimeSettings(), ObservabilitySettings()
    capacity = _int(
        _pick(args, "storage_capacity", env, "STORAGE_CAPACITY"), "--storage-capacity", 0
    )
    domain = DomainSettings(
        user_limit=_int(_pick(args, "user_limit", env, "USER_LIMIT"), "--user-limit", 1)
        or d.user_limit,
        storage_capacity=d.storage_capacity if capacity is None else capacity,
    )
    runtime = replace(
        r,
        batch_size=_int(_pick(args, "batch_size", env, "BATCH_SIZE"), "--batch-size", 1)
        or r.batch_size,
        in_flight=_int(_pick(args, "in_flight", env, "IN_FLIGHT"), "--in-flight", 1) or r.in_flight,
        claim_idle_ms=_int(_pick(args, "claim_idle_ms", env, "CLAIM_IDLE_MS"), "--claim-idle-ms", 1)
        or r.claim_idle_ms,
        max_deliveries=_int(
            _pick(args, "max_deliveries", env, "MAX_DELIVERIES"), "--max-deliveries", 1
        )
        or r.max_deliveries,
        retention_s=_int(_pick(args, "retention", env, "RETENTION_S"), "--retention", 1)
        or r.retention_s,
        lock_ttl_ms=_int(_env(env, "LOCK_TTL_MS"), "BOOKSTREAM_LOCK_TTL_MS", 100) or r.lock_ttl_ms,
        give_up_s=_int(_env(env, "GIVE_UP_S"), "BOOKSTREAM_GIVE_UP_S", 1) or r.give_up_s,
        request_deadline_s=_int(
            _pick(args, "request_deadline", env, "REQUEST_DEADLINE_S"), "--request-deadline", 1
        )
        or r.request_deadline_s,
    )
    log_format = _pick(args, "log_format", env, "LOG_FORMAT") or o.log_format
    if log_format not in ("console", "json"):
        raise ConfigError(f"log format must be console or json, not {log_format!r}")
    log_level = (_pick(args, "log_level", env, "LOG_LEVEL") or o.log_level).lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log level must be debug, info, warning or error, not {log_level!r}")
    observability = ObservabilitySettings(
        metrics_port=_int(_pick(args, "metrics_port", env, "METRICS_PORT"), "--metrics-port"),
        log_format=log_format,
        log_level=log_level,
    )
    name = args.name or _env(env, "WORKER_NAME") or generated_worker_name(service)
    force = bool(args.force) or _bool(_env(env, "FORCE"))
    return WorkerSettings(
        service=service,
        name=check_worker_name(name),
        library=library_from(args, env),
        force=force,
        redis=redis_settings_from(args, env),
        domain=domain,
        runtime=runtime,
        observability=observability,
    )


def check_worker_name(name: str) -> str:
    from bookstream_core.ids import InvalidId, check_id

    try:
        check_id("worker name", name)
    except InvalidId as exc:
        raise ConfigError(str(exc)) from None
    return name
