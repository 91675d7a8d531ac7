"""Safe scale-down: retire the consumers of removed workers without losing an entry.

``XGROUP DELCONSUMER`` alone discards the consumer's pending entries (they are then
acknowledged by nobody and never redelivered). Here each removed worker's consumer is
retired by one call of the core function ``bs1_hand_over`` (core.lua; the operator runs
no script of its own and may not load one) that, atomically: does nothing while the
worker still holds its lock (it is still draining), else moves its pending entries to a
surviving worker (keeping their idle time and delivery count) and deletes the consumer
only once it holds none. A consumer is retired only if its name is one of this
workload's worker names with an ordinal at or above the new replica count, or the bare
pod name an older operator used (those workers are gone once the pods run under the new
names); other consumers are never touched.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import redis.asyncio as aioredis
from bookstream_core.functions import CoreFunctions, HandOver
from bookstream_core.keys import LibraryKeys
from bookstream_core.types import ServiceName

from bookstream_operator import naming

#: Entries moved per call: bounds how long one call blocks Redis.
BATCH = 500


class RetirementResult(enum.Enum):
    RETIRED = "retired"
    ALIVE = "alive"  # the worker still holds its lock: try again on a later pass
    NO_SURVIVOR = "no-survivor"  # scaled to zero: the entries wait for a worker
    GONE = "gone"  # no stream or group


@dataclass(frozen=True, slots=True)
class Retirement:
    consumer: str
    outcome: RetirementResult
    moved: int = 0
    target: str | None = None
    remaining: int = 0


class UnexpectedResult(RuntimeError):
    pass


def _ordinal(namespace: str, instance: str, service: ServiceName, consumer: str) -> int | None:
    ordinal = naming.ordinal_of(namespace, instance, service, consumer)
    if ordinal is None:
        ordinal = naming.legacy_ordinal_of(instance, service, consumer)
    return ordinal


def removed_consumers(
    namespace: str, instance: str, service: ServiceName, replicas: int, consumers: list[str]
) -> list[str]:
    """This workload's consumers whose ordinal is >= ``replicas``, and every consumer under
    an older operator's name."""
    removed = []
    for name in consumers:
        ordinal = naming.ordinal_of(namespace, instance, service, name)
        legacy = naming.legacy_ordinal_of(instance, service, name)
        if (ordinal is not None and ordinal >= replicas) or legacy is not None:
            removed.append(name)
    return sorted(removed, key=lambda n: (_ordinal(namespace, instance, service, n) or 0, n))


def survivor_for(
    namespace: str, instance: str, service: ServiceName, replicas: int, consumer: str
) -> str | None:
    """Spread removed workers' entries over the survivors by ordinal."""
    if replicas <= 0:
        return None
    ordinal = _ordinal(namespace, instance, service, consumer) or 0
    return naming.worker_name(namespace, instance, service, ordinal % replicas)


class ConsumerRetirer:
    """Retires removed workers' consumers through ``bs1_hand_over`` (FCALL)."""

    def __init__(self, client: aioredis.Redis, keys: LibraryKeys) -> None:
        self.keys = keys
        self.core = CoreFunctions(client)

    async def retire(
        self, service: ServiceName, consumer: str, survivor: str, batch: int = BATCH
    ) -> Retirement:
        moved = 0
        while True:
            try:
                code, step, remaining = await self.core.hand_over(
                    self.keys.inbox(service),
                    self.keys.worker_lock(service, consumer),
                    group=self.keys.group(service),
                    consumer=consumer,
                    survivor=survivor,
                    batch=batch,
                )
            except ValueError as exc:  # a code this operator does not know
                raise UnexpectedResult(f"bs1_hand_over: {exc}") from exc
            moved += step
            if code == HandOver.RETIRED:
                return Retirement(consumer, RetirementResult.RETIRED, moved, survivor)
            if code == HandOver.ALIVE:
                return Retirement(consumer, RetirementResult.ALIVE, moved, survivor)
            if code == HandOver.NO_GROUP:
                return Retirement(consumer, RetirementResult.GONE, moved, survivor)
            if step == 0:  # pending but unclaimable: leave it rather than spin
                return Retirement(consumer, RetirementResult.ALIVE, moved, survivor, remaining)

    async def scale_down(
        self,
        namespace: str,
        instance: str,
        service: ServiceName,
        replicas: int,
        consumers: list[str],
    ) -> list[Retirement]:
        """Retire every removed worker's consumer among ``consumers`` (names in the group)."""
        results = []
        for consumer in removed_consumers(namespace, instance, service, replicas, consumers):
            survivor = survivor_for(namespace, instance, service, replicas, consumer)
            if survivor is None:
                results.append(Retirement(consumer, RetirementResult.NO_SURVIVOR))
                continue
            results.append(await self.retire(service, consumer, survivor))
        return results
