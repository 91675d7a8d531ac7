"""Is the run correct? The audit (docs/design.md §4) plus exactly one outcome per request.

"Exactly one" from two counts: every request id has its outcome key, and the domain
events stream received exactly as many outcomes as there were requests (a duplicate
outcome would make it more). Dead letters are reported too: the workload has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from bookstream_core.keys import SERVICES, LibraryKeys

from bookstream.audit import audit
from bookstream.bench import library
from bookstream.bench.workload import WorkloadEvent
from bookstream.render import counted

CHUNK = 5_000


@dataclass
class Verdict:
    audit_ok: bool
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outcomes: int = 0
    missing_outcomes: int = 0
    dead_letters: int = 0

    @property
    def ok(self) -> bool:
        return self.audit_ok and not self.violations


async def check(
    r: aioredis.Redis,
    keys: LibraryKeys,
    events: Sequence[WorkloadEvent],
    *,
    user_limit: int = 5,
    storage_capacity: int = 20,
    outcome_keys: bool = True,
) -> Verdict:
    report = await audit(r, keys.library, user_limit=user_limit, storage_capacity=storage_capacity)
    verdict = Verdict(report.ok, notes=list(report.notes))
    verdict.violations += report.violations[:50]
    verdict.outcomes = (await library.state(r, keys)).outcomes
    if verdict.outcomes != len(events):
        verdict.violations.append(
            f"{verdict.outcomes} outcomes were published for {len(events)} requests"
        )
    missing: list[str] = []
    if not outcome_keys:
        verdict.notes.append(
            "outcomes may have expired (short --retention): counted from the events stream only"
        )
    for start in range(0, len(events) if outcome_keys else 0, CHUNK):
        chunk = events[start : start + CHUNK]
        async with r.pipeline(transaction=False) as pipe:
            for event in chunk:
                pipe.exists(keys.outcome(event.request_id))
            found = await pipe.execute()
        missing += [e.request_id for e, n in zip(chunk, found, strict=True) if not n]
    verdict.missing_outcomes = len(missing)
    if missing:
        verdict.violations.append(
            f"{counted(len(missing), 'request')} without an outcome "
            f"(first: {', '.join(missing[:5])})"
        )
    for service in SERVICES:
        verdict.dead_letters += int(await r.xlen(keys.dead_letters(service)))
    if verdict.dead_letters:
        verdict.violations.append(f"{verdict.dead_letters} dead letters (the workload has none)")
    return verdict
