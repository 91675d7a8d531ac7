"""Waiting for many outcomes at once over one Pub/Sub connection.

Each waiter registers a future for its outcome channel; one reader task routes messages
to the futures. The channel is subscribed once per request id however many tasks wait
for it, and the subscription is confirmed before the caller looks at the stored outcome
and submits, so no announcement can slip between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub


class OutcomeWaiter:
    def __init__(self, r: aioredis.Redis) -> None:
        self._r = r
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[bytes, list[asyncio.Future[bytes]]] = {}
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self._closing: asyncio.Future[None] | None = None

    async def register(self, channel: str) -> tuple[asyncio.Future[bytes], asyncio.Future[None]]:
        """Subscribe (once per channel); a future for its next message, and one that is
        done once Redis confirmed the subscription."""
        key = channel.encode()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        async with self._lock:
            pubsub = await self._ensure()
            self._waiters.setdefault(key, []).append(future)
            confirmed = self._confirmed.get(key)
            if confirmed is None:
                confirmed = asyncio.get_running_loop().create_future()
                confirmed.add_done_callback(_retrieved)
                self._confirmed[key] = confirmed
                await pubsub.subscribe(channel)
        return future, confirmed

    async def release(self, channel: str, future: asyncio.Future[bytes]) -> None:
        key = channel.encode()
        async with self._lock:
            waiters = self._waiters.get(key, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(key, None)
                if self._confirmed.pop(key, None) is not None and self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.unsubscribe(channel)

    async def _ensure(self) -> PubSub:
        if self._pubsub is None:
            self._pubsub = self._r.pubsub()
            self._reader = asyncio.create_task(self._read(self._pubsub))
        return self._pubsub

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while True:
                if not pubsub.subscribed:
                    await asyncio.sleep(0.01)
                    continue
                message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._route(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection broke: every waiter learns it now
            self._fail(exc)

    def _route(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        if message["type"] == "subscribe":
            confirmed = self._confirmed.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif message["type"] == "message":
            for future in self._waiters.get(channel, []):
                if not future.done():
                    future.set_result(message["data"])

    def _fail(self, exc: Exception) -> None:
        futures: list[asyncio.Future[None] | asyncio.Future[bytes]] = [*self._confirmed.values()]
        futures += [f for waiting in self._waiters.values() for f in waiting]
        for future in futures:
            if not future.done():
                future.set_exception(exc)
        self._waiters.clear()
        self._confirmed.clear()
        pubsub, self._pubsub, self._reader = self._pubsub, None, None
        if pubsub is not None:
            self._closing = asyncio.ensure_future(pubsub.aclose())  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        self._pubsub = self._reader = None


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a failure read: a waiter may have left (an earlier error, its time up) before
    the connection broke, and asyncio would print a failure nobody read as a traceback."""
    if not future.cancelled():
        future.exception()
