"""The operator's Redis connection for one LibraryInstance.

The settings come from ``bookstream_core.config.build_redis_settings``, the builder the
workers and the CLI use, so the operator reaches the Redis the workers reach (same URL
checks, ``tls: true`` turning redis:// into rediss://); only the password's source
differs: the workers read a mounted file, the operator the Secret through the API
(``credentials.py``). TLS verifies the server against the system's CAs (redis-py's
defaults: certificate and host name required); a LibraryInstance names no CA file yet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from bookstream_core.config import RedisSettings, build_redis_settings

from bookstream_operator.credentials import Credentials
from bookstream_operator.spec import RedisSpec

TIMEOUT_S = 5.0


def redis_settings(spec: RedisSpec, credentials: Credentials) -> RedisSettings:
    return build_redis_settings(
        url=spec.url,
        user=credentials.user,
        password=credentials.password,
        db=spec.db,
        ssl=spec.tls,
    )


@asynccontextmanager
async def connect(settings: RedisSettings) -> AsyncIterator[aioredis.Redis]:
    """A short-lived client (one reconcile pass), decoding responses to str."""
    assert settings.url is not None, "a LibraryInstance always names its Redis"
    kwargs: dict[str, object] = {
        "decode_responses": True,
        "socket_timeout": TIMEOUT_S,
        "socket_connect_timeout": TIMEOUT_S,
        "client_name": "bookstream-operator",
    }
    if settings.password is not None:
        kwargs["password"] = settings.password
    if settings.user is not None:
        kwargs["username"] = settings.user
    if settings.db is not None:
        kwargs["db"] = settings.db
    client = aioredis.Redis.from_url(settings.url, **kwargs)  # type: ignore[arg-type]
    try:
        yield client
    finally:
        await client.aclose()
