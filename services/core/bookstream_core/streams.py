"""What a consumer group still has to read, and what waits to be admitted.

Redis reports a group's ``lag``, but the counter behind it can drift: after a restart
from an AOF rewritten while scripts were appending to the stream, Redis 7.0.15 reported a
lag of thousands for a group with nothing left to read (an empty stream). Whether an
entry follows the group's last delivered id is a fact, so that decides zero; the
counter only sizes a non-empty backlog.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bookstream_core.types import text

MAX_ID = "18446744073709551615-18446744073709551615"


#: Entries counted one by one when Redis cannot say the lag (after a deletion or a trim):
#: past this many, the backlog is reported as this many (at least). Each is read whole,
#: so a worker's gauge, refreshed every second on the hot path's Redis, counts few; a
#: user's `status`, more. (The operator's observe.py counts the same way on its own.)
COUNTED_AT_MOST = 10_000
GAUGE_COUNTS_AT_MOST = 100


async def backlog(
    r: aioredis.Redis, stream: str, group: Mapping[str, object], most: int = COUNTED_AT_MOST
) -> int:
    """Entries not yet delivered to the group (an ``XINFO GROUPS`` row): 0 when none
    follows its last delivered id, else Redis's lag (at least 1). When Redis has no lag
    (an entry was deleted or trimmed), the entries after the last delivered id are
    counted, up to ``most`` (breaker: status said "backlog None" and the lag gauge was NaN
    while requests waited)."""
    last = text(group["last-delivered-id"])  # type: ignore[arg-type]
    if last == MAX_ID:  # nothing can follow it (and Redis refuses the range "(max")
        return 0
    if not await r.xrange(stream, min=f"({last}", count=1):
        return 0
    lag = group.get("lag")
    if lag is not None:
        return max(1, int(text(lag)))  # type: ignore[arg-type]
    after = await r.xrange(stream, min=f"({last}", count=most)
    return len(after or [])


async def waiting(r: aioredis.Redis, queue: str) -> int | None:
    """Submissions in ``queue`` not yet admitted into an inbox; None if the key is not a
    list (an admin's mistake, which the admission reports): unknown, not an error here."""
    try:
        return int(await r.llen(queue))
    except ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        return None
