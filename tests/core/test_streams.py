"""What a group still has to read, on a real Redis: also after a deletion, when Redis
itself no longer knows the lag (breaker: `status` printed "backlog None")."""

from __future__ import annotations

import redis.asyncio as aioredis
from bookstream_core.streams import backlog


async def _group(r: aioredis.Redis, stream: str) -> dict[str, object]:
    (info,) = await r.xinfo_groups(stream)
    return dict(info)


async def test_the_backlog_is_counted_when_redis_cannot_say_it(aredis: aioredis.Redis) -> None:
    stream = "bs:{t}:lending:inbox"
    await aredis.xgroup_create(stream, "g", id="0", mkstream=True)
    ids = [await aredis.xadd(stream, {"e": str(n)}) for n in range(5)]
    assert await backlog(aredis, stream, await _group(aredis, stream)) == 5
    await aredis.xdel(stream, ids[1])
    group = await _group(aredis, stream)
    assert group["lag"] is None  # Redis's own answer once an entry is gone
    assert await backlog(aredis, stream, group) == 4
    await aredis.xreadgroup("g", "c", {stream: ">"}, count=2)
    assert await backlog(aredis, stream, await _group(aredis, stream)) == 2
    await aredis.xreadgroup("g", "c", {stream: ">"})
    assert await backlog(aredis, stream, await _group(aredis, stream)) == 0
