"""One LibraryInstance per library: a claim in the library's own Redis.

Two LibraryInstances on one library would each count the whole backlog, could run their
Lending workers with different limits (every Lending worker of a library must agree),
and two of the same name in two namespaces would run workers of identical names that
steal each other's worker lock. So the first LibraryInstance to reconcile a library
writes its identity into ``bs:{LIBRARY}:operator:claim`` (SET NX); any other one finds
the claim taken, reports ``Conflict`` and creates nothing.

There is no finalizer to release the claim at deletion (see handlers.py), so a claim is
stale once the LibraryInstance it names is gone (or was re-created with a new uid): the
next claimant checks that through the API and takes the claim over with a
compare-and-set (``bs1_compare_and_set``, a core function: the operator runs no script
and may not load one). When the holder cannot be checked (no permission to read its
namespace), the claim stands.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis
from bookstream_core.functions import CoreFunctions
from bookstream_core.keys import LibraryKeys


@dataclass(frozen=True, slots=True)
class Holder:
    uid: str
    namespace: str
    name: str

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, raw: str) -> Holder:
        try:
            data = json.loads(raw)
            return cls(str(data["uid"]), str(data["namespace"]), str(data["name"]))
        except (ValueError, KeyError, TypeError):
            return cls(uid=raw, namespace="?", name="?")

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} (uid {self.uid})"


#: ``uid of namespace/name`` now: the uid, ``None`` if it does not exist, or raises
#: :class:`HolderUnknown` when that cannot be told.
UidLookup = Callable[[str, str], Awaitable[str | None]]


class HolderUnknown(Exception):
    """The holder's existence cannot be checked (e.g. 403): treat the claim as valid."""


def claim_key(keys: LibraryKeys) -> str:
    return f"{keys.prefix}operator:claim"


async def claim(
    client: aioredis.Redis, keys: LibraryKeys, me: Holder, lookup: UidLookup
) -> Holder | None:
    """Claim the library for ``me``; ``None`` if it is ours, else who holds it."""
    core = CoreFunctions(client)
    key = claim_key(keys)
    for _ in range(3):  # another claimant may write between our reads
        raw = await client.get(key)
        if raw is None:
            if await client.set(key, me.encode(), nx=True):
                return None
            continue
        holder = Holder.decode(str(raw))
        if holder.uid == me.uid:
            if holder != me:  # e.g. an old claim without namespace/name
                await core.compare_and_set(key, str(raw), me.encode())
            return None
        try:
            alive = await lookup(holder.namespace, holder.name) == holder.uid
        except HolderUnknown:
            return holder
        if alive:
            return holder
        if await core.compare_and_set(key, str(raw), me.encode()):
            return None
    raw = await client.get(key)
    return Holder.decode(str(raw)) if raw is not None else None
