"""The library claim against a real redis-server: first come, stale claims taken over."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis
from bookstream_core.keys import LibraryKeys
from bookstream_operator.claim import Holder, HolderUnknown, UidLookup, claim, claim_key

if TYPE_CHECKING:
    from conftest import RedisServer

KEYS = LibraryKeys("main")
A = Holder("uid-a", "books", "lib")
B = Holder("uid-b", "shelves", "lib")


@pytest.fixture
async def aclient(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def api(alive: dict[tuple[str, str], str]) -> UidLookup:
    async def lookup(namespace: str, name: str) -> str | None:
        return alive.get((namespace, name))

    return lookup


async def test_first_claimant_holds_the_library_others_conflict(aclient: aioredis.Redis) -> None:
    alive = {("books", "lib"): "uid-a", ("shelves", "lib"): "uid-b"}
    assert await claim(aclient, KEYS, A, api(alive)) is None
    assert await claim(aclient, KEYS, A, api(alive)) is None
    assert await claim(aclient, KEYS, B, api(alive)) == A
    assert json.loads(await aclient.get(claim_key(KEYS)) or "{}")["uid"] == "uid-a"
    # Another library on the same Redis is its own claim.
    assert await claim(aclient, LibraryKeys("east"), B, api(alive)) is None


async def test_a_stale_claim_is_taken_over_and_an_unknown_one_stands(
    aclient: aioredis.Redis,
) -> None:
    await claim(aclient, KEYS, A, api({("books", "lib"): "uid-a"}))
    # A was deleted (or re-created with another uid): B takes the library.
    assert await claim(aclient, KEYS, B, api({("books", "lib"): "uid-a2"})) is None
    assert json.loads(await aclient.get(claim_key(KEYS)) or "{}")["uid"] == "uid-b"

    async def forbidden(namespace: str, name: str) -> str | None:
        raise HolderUnknown("HTTP 403")

    assert await claim(aclient, KEYS, A, forbidden) == B


async def test_concurrent_claimants_of_a_free_library_end_with_one_holder(
    aclient: aioredis.Redis,
) -> None:
    holders = [Holder(f"uid-{i}", "ns", f"li{i}") for i in range(20)]
    alive = {(h.namespace, h.name): h.uid for h in holders}
    results = await asyncio.gather(*(claim(aclient, KEYS, h, api(alive)) for h in holders))
    winners = [h for h, r in zip(holders, results, strict=True) if r is None]
    assert len(winners) == 1
    assert all(r == winners[0] for r in results if r is not None)
