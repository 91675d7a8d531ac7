"""The operator's Redis connection for one LibraryInstance."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from bookstream_core.config import normalize_address

from bookstream_operator.spec import RedisSpec

TIMEOUT_S = 5.0


def redis_url(spec: RedisSpec) -> str:
    """The URL the workers get, with ``tls: true`` turning ``redis://`` into ``rediss://``."""
    url = normalize_address(spec.url)
    if spec.tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://") :]
    return url


@asynccontextmanager
async def connect(spec: RedisSpec, password: str | None) -> AsyncIterator[aioredis.Redis]:
    """A short-lived client (one reconcile pass), decoding responses to str."""
    kwargs: dict[str, object] = {
        "decode_responses": True,
        "socket_timeout": TIMEOUT_S,
        "socket_connect_timeout": TIMEOUT_S,
        "client_name": "bookstream-operator",
    }
    if password is not None:
        kwargs["password"] = password
    if spec.db is not None:
        kwargs["db"] = spec.db
    client = aioredis.Redis.from_url(redis_url(spec), **kwargs)  # type: ignore[arg-type]
    try:
        yield client
    finally:
        await client.aclose()
