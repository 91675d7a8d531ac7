"""Reading a key that something else may have written with another type.

The audit and the read views must report such a key, not crash on WRONGTYPE (a traceback
exits 1 too, which a script would take for the audit's verdict).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from bookstream_core.types import text


async def typed(r: aioredis.Redis, key: str, expected: str, problems: list[str]) -> bool:
    """Whether ``key`` is absent or of the ``expected`` type; if not, says so in
    ``problems`` (and the caller reads it as empty)."""
    kind = text(await r.type(key))
    if kind in ("none", expected):
        return True
    problems.append(f"key {key!r} holds a {kind}, not a {expected}")
    return False
