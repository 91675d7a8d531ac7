"""Status collection: what Redis says about one service's consumer group.

Reads only (XINFO GROUPS/CONSUMERS, XPENDING, XRANGE bounded, XLEN, LLEN, TIME): safe to run
as often as the status is refreshed, against a primary or a replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from bookstream_core.keys import LibraryKeys
from bookstream_core.streams import waiting as submissions_waiting
from bookstream_core.types import ServiceName

from bookstream_operator.autoscaling import Backlog
from bookstream_operator.types import Manifest

#: When Redis reports no lag, count at most this many undelivered entries.
ESTIMATE_CAP = 5_000
#: Consumers listed in the status (those holding most pending entries first): a status
#: must stay far below etcd's object size limit however many consumers a group has.
STATUS_CONSUMERS = 50


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True, slots=True)
class GroupStatus:
    service: ServiceName
    stream_exists: bool
    group_exists: bool
    length: int = 0
    lag: int | None = None
    estimated_lag: int | None = None
    lag_capped: bool = False
    pending: int = 0
    oldest_pending_age_s: float | None = None
    dead_letters: int = 0
    consumers: list[ConsumerInfo] = field(default_factory=list)
    #: Lending: submissions clients made that no worker has admitted into the inbox yet.
    submissions: int = 0

    @property
    def backlog(self) -> Backlog:
        return Backlog(
            self.lag, self.pending, self.oldest_pending_age_s, self.estimated_lag,
            self.submissions,
        )  # fmt: skip

    def consumer_names(self) -> list[str]:
        return [c.name for c in self.consumers]

    def to_status(self) -> Manifest:
        """The Redis half of ``status.<service>`` (camelCase, JSON-ready)."""
        if self.lag is not None:
            lag, source = self.lag, "redis"
        elif self.estimated_lag is not None:
            lag, source = self.estimated_lag, "counted-capped" if self.lag_capped else "counted"
        else:
            lag, source = None, "unknown"
        return {
            "streamLength": self.length,
            "submissionsWaiting": self.submissions,
            "lag": lag,
            "lagSource": source,
            "pending": self.pending,
            "oldestPendingAgeSeconds": None
            if self.oldest_pending_age_s is None
            else round(self.oldest_pending_age_s, 3),
            "deadLetters": self.dead_letters,
            "consumerCount": len(self.consumers),
            "consumers": [
                {"name": c.name, "pending": c.pending, "idleMs": c.idle_ms}
                for c in sorted(self.consumers, key=lambda c: (-c.pending, c.name))[
                    :STATUS_CONSUMERS
                ]
            ],
        }


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


async def collect(client: aioredis.Redis, keys: LibraryKeys, service: ServiceName) -> GroupStatus:
    """One service's group as it is now. ``client`` must decode responses."""
    stream, group = keys.inbox(service), keys.group(service)
    dead = int(await client.xlen(keys.dead_letters(service)))
    # Not a list (an admin's mistake, which the workers report): none counted.
    waiting = (
        (await submissions_waiting(client, keys.submissions) or 0) if service == "lending" else 0
    )
    if not await client.exists(stream):
        return GroupStatus(
            service, stream_exists=False, group_exists=False, dead_letters=dead,
            submissions=waiting,
        )  # fmt: skip
    length = int(await client.xlen(stream))
    try:
        groups = await client.xinfo_groups(stream)
    except redis.exceptions.NoPermissionError:
        raise  # a right the operator's user lacks, not a library without its group
    except redis.exceptions.ResponseError:  # the key is not a stream
        groups = []
    info = next((g for g in groups if g.get("name") == group), None)
    if info is None:
        return GroupStatus(
            service, stream_exists=True, group_exists=False, length=length, dead_letters=dead,
            submissions=waiting,
        )  # fmt: skip

    lag = _int(info.get("lag"))
    estimated: int | None = None
    capped = False
    if lag is None:
        # Redis cannot compute the lag (e.g. after XDEL in the range): count what follows
        # the group's last-delivered id, up to a bound.
        after = "(" + str(info.get("last-delivered-id") or "0-0")
        entries = await client.xrange(stream, min=after, max="+", count=ESTIMATE_CAP) or []
        estimated, capped = len(entries), len(entries) >= ESTIMATE_CAP

    pending = await client.xpending(stream, group)
    oldest_age: float | None = None
    if int(pending["pending"]) > 0 and pending.get("min"):
        seconds, micros = await client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        oldest_age = max(0.0, (now_ms - _id_ms(str(pending["min"]))) / 1000)

    consumers = [
        ConsumerInfo(str(c["name"]), int(c["pending"]), int(c["idle"]))
        for c in await client.xinfo_consumers(stream, group)
    ]
    return GroupStatus(
        service,
        stream_exists=True,
        group_exists=True,
        length=length,
        lag=lag,
        estimated_lag=estimated,
        lag_capped=capped,
        pending=int(pending["pending"]),
        oldest_pending_age_s=oldest_age,
        dead_letters=dead,
        consumers=sorted(consumers, key=lambda c: c.name),
        submissions=waiting,
    )
