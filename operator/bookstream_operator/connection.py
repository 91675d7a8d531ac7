"""The operator's Redis connection for one LibraryInstance.

The settings come from ``bookstream_core.config.build_redis_settings`` and the connection
from ``bookstream_core.connection.connection_pool``, what the workers and the CLI use, so
the operator reaches the Redis the workers reach (same URL checks, ``tls: true`` turning
redis:// into rediss://, the same TLS context); only the password's source differs: the
workers read a mounted file, the operator the Secret through the API (``credentials.py``).
TLS verifies the server against the system's CAs, or those of the operator's own
``BOOKSTREAM_REDIS_TLS_CA`` (a LibraryInstance names no CA file; operator/README.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from bookstream_core.config import RedisSettings, build_redis_settings
from bookstream_core.connection import connection_pool

from bookstream_operator.credentials import Credentials
from bookstream_operator.spec import RedisSpec

TIMEOUT_S = 5.0


def redis_settings(
    spec: RedisSpec, credentials: Credentials, tls_files: Mapping[str, str] | None = None
) -> RedisSettings:
    """``tls_files``: the operator's own TLS files (``tls_ca``, ``tls_cert``,
    ``tls_key``), used for a LibraryInstance whose Redis speaks TLS."""
    # Only for TLS: the files are the operator's, not this LibraryInstance's, and a plain
    # Redis given TLS files is a settings error.
    files = (tls_files or {}) if spec.tls or spec.url.startswith("rediss://") else {}
    return build_redis_settings(
        url=spec.url,
        user=credentials.user,
        password=credentials.password,
        db=spec.db,
        ssl=spec.tls,
        tls_ca=files.get("tls_ca"),
        tls_cert=files.get("tls_cert"),
        tls_key=files.get("tls_key"),
    )


@asynccontextmanager
async def connect(settings: RedisSettings) -> AsyncIterator[aioredis.Redis]:
    """A short-lived client (one reconcile pass), decoding responses to str."""
    assert settings.url is not None, "a LibraryInstance always names its Redis"
    pool = connection_pool(
        settings,
        settings.url,
        aioredis.ConnectionPool,
        decode_responses=True,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
        client_name="bookstream-operator",
    )
    client = aioredis.Redis.from_pool(pool)
    try:
        yield client
    finally:
        await client.aclose()
