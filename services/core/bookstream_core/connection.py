"""Opening Redis connections from settings (the embedded one started on demand)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bookstream_core.config import ConfigError, RedisSettings
from bookstream_core.embedded import EmbeddedRedis
from bookstream_core.passwords import read_password_file
from bookstream_core.tls import client_context

#: What "Redis cannot be reached right now" looks like to redis-py callers.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class FileCredentials(CredentialProvider):
    """The user and the password file's content, read for every new connection: a
    rotated password (a mounted Secret updated in place) is used from the next one."""

    def __init__(self, user: str | None, path: str) -> None:
        self.user = user
        self.path = path

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        try:
            password = read_password_file(self.path)
        except ConfigError as exc:
            # Raised inside a connection attempt: the caller sees Redis unreachable, with why.
            raise RedisConnectionError(str(exc)) from None
        return (self.user, password) if self.user else (password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


class TLSConnection(SSLConnection):
    """redis-py's TLS connection with bookstream's context (``tls.client_context``: only
    ``--tls-ca``'s CAs when given), made again at every connect: redis-py keeps its first
    context for the connection object's life and a pool reuses the object across
    reconnects, so a renewed client certificate or a corrected CA file would never be
    seen by a running worker. (A private hook of redis-py: tests/core/test_tls.py fails
    if it stops being called.)"""

    def _connection_arguments(self) -> Mapping[str, Any]:
        files = self.ssl_context
        files.context = client_context(files.ca_certs, files.certfile, files.keyfile)
        arguments: Mapping[str, Any] = super()._connection_arguments()
        return arguments


def resolve_url(settings: RedisSettings) -> str:
    """The URL to connect to; starts the embedded Redis when none is named."""
    if settings.url is None:
        return EmbeddedRedis(settings.home, settings.appendfsync).ensure()
    return settings.url


def connection_arguments(settings: RedisSettings, url: str) -> dict[str, object]:
    """What every connection to the Redis ``settings`` name carries, whoever opens it
    (clients, workers, the operator): who it authenticates as (a password file read again
    for every new connection), its database, and for ``rediss://`` the TLS files."""
    kwargs: dict[str, object] = {}
    if settings.password_file is not None:
        kwargs["credential_provider"] = FileCredentials(settings.user, settings.password_file)
    else:
        if settings.user is not None:
            kwargs["username"] = settings.user
        if settings.password is not None:
            kwargs["password"] = settings.password
    if settings.db is not None:
        kwargs["db"] = settings.db
    if url.startswith("rediss://"):
        # TLSConnection makes its own context from these; spelled out all the same, so
        # that redis-py's context would verify too if its hook were not called.
        kwargs["ssl_cert_reqs"] = "required"
        kwargs["ssl_check_hostname"] = True
        kwargs["ssl_ca_certs"] = settings.tls_ca  # None: the system's CAs
        kwargs["ssl_certfile"] = settings.tls_cert
        kwargs["ssl_keyfile"] = settings.tls_key
    return kwargs


P = TypeVar("P", bound=aioredis.ConnectionPool)


def connection_pool(settings: RedisSettings, url: str, pool_class: type[P], **options: object) -> P:
    """A pool of connections to ``url`` with ``connection_arguments`` and ``options``."""
    pool = pool_class.from_url(url, **connection_arguments(settings, url), **options)
    if url.startswith("rediss://"):
        # Set after from_url, whose URL parsing picks redis-py's own class for rediss://.
        pool.connection_class = TLSConnection
    return pool


def connect(
    settings: RedisSettings,
    *,
    client_name: str | None = None,
    max_connections: int = 64,
    timeout: float | None = None,
) -> aioredis.Redis:
    """A pooled connection. With ``timeout`` (clients) every call, connecting included,
    fails after that many seconds, and only a dropped connection is retried (once): a
    Redis that accepts connections but never answers cannot make a client hang.
    Without it (workers) calls may block, and blips are retried a few times."""
    url = resolve_url(settings)
    backoff = EqualJitterBackoff(cap=0.5, base=0.02)
    kwargs: dict[str, object] = {
        "decode_responses": False,
        # No idle check: redis-py's check of a connection whose login Redis refused (no
        # password given to a Redis that wants one) reconnected for ever, so a command
        # hung past its timeout and a worker hung silently, deaf to SIGTERM (breakers). A
        # dead connection is noticed when used (and retried), on TCP by keepalive too.
        "health_check_interval": 0,
        # A short, jittered retry inside redis-py for one-off blips; longer outages
        # are handled (and logged once per state change) by the worker loop.
        "retry": Retry(backoff, 3)
        if timeout is None
        else Retry(backoff, 1, supported_errors=(RedisConnectionError,)),
        "client_name": client_name or settings.client_name,
    }
    if timeout is not None:
        kwargs["socket_timeout"] = timeout
        kwargs["socket_connect_timeout"] = timeout
    if not url.startswith("unix://"):
        kwargs["socket_keepalive"] = True  # notice a dead peer on a TCP connection
    # A blocking pool: past max_connections a caller waits for a free connection instead
    # of failing with "Too many connections" (a client may run thousands of tasks).
    pool = connection_pool(
        settings,
        url,
        aioredis.BlockingConnectionPool,
        max_connections=max_connections,
        timeout=None,
        **kwargs,
    )
    return aioredis.Redis.from_pool(pool)
