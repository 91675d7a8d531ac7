"""One command with many arguments, packed by hiredis in C.

redis-py's asyncio connection packs a command in Python, argument by argument; for the
batch FCALLs (a thousand arguments and more) that was a fifth of a worker's CPU
(benchmarks/README.md, "Profile of a drain run"). ``hiredis.pack_command`` does the same
in C. The reply is read and parsed as usual (hiredis), and an error reply raises.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

Arg = bytes | str | int


async def execute_packed(r: aioredis.Redis, *args: Arg) -> Any:
    """Send one command on a pooled connection and return its parsed reply.

    No retry here: a connection error reaches the worker loop, which treats Redis as
    gone, and re-reads its pending entries once Redis is back (applying them again is
    a no-op: every event is idempotent)."""
    # hiredis' stubs describe the argument as a 1-tuple; any length is packed.
    packed = hiredis.pack_command(args)  # type: ignore[arg-type]
    pool = r.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(packed)
        return await conn.read_response()
    except ResponseError:
        raise  # an error reply: the connection itself is fine
    except BaseException:
        # The connection may be mid-reply (cancelled, cut): never hand it out again.
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)
