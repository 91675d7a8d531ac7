"""The autoscaling decision: a pure function of the backlog, the bounds and the clock.

The backlog is what the group has not finished: entries not yet delivered (lag) plus
entries delivered but not acknowledged (pending). Redis reports ``lag`` as unknown after
some deletions; then the status collector's bounded count of entries after the group's
last-delivered id stands in, and when even that is missing only pending counts. An
oldest pending entry older than ``maxPendingAgeSeconds`` means the workers are falling
behind whatever the counts say: scale up one step and never down.

Scaling up is immediate (a backlog hurts now) but at most doubles the set per step;
scaling down waits ``cooldownSeconds`` after the last change (so a burst that just
drained does not make the set flap). Both stay within ``[minReplicas, maxReplicas]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bookstream_operator.spec import AutoscalingSpec


@dataclass(frozen=True, slots=True)
class Backlog:
    lag: int | None
    pending: int
    oldest_pending_age_s: float | None = None
    #: Entries counted after the group's last-delivered id, when ``lag`` is unknown.
    estimated_lag: int | None = None

    @property
    def undelivered(self) -> int:
        if self.lag is not None:
            return self.lag
        return self.estimated_lag or 0

    @property
    def total(self) -> int:
        return self.undelivered + self.pending


@dataclass(frozen=True, slots=True)
class Decision:
    replicas: int
    reason: str

    def changed(self, current: int) -> bool:
        return self.replicas != current


def decide(
    auto: AutoscalingSpec,
    backlog: Backlog | None,
    current: int,
    last_scale_time: float | None,
    now: float,
) -> Decision:
    """How many workers one service should run now."""
    low, high = auto.min_replicas, auto.max_replicas
    bounded = min(max(current, low), high)
    if bounded != current:
        return Decision(bounded, f"outside bounds [{low}, {high}]")
    if backlog is None:
        return Decision(current, "no backlog signal (Redis unreachable): unchanged")

    wanted = math.ceil(backlog.total / auto.target_lag_per_replica)
    stale = (
        backlog.oldest_pending_age_s is not None
        and backlog.oldest_pending_age_s > auto.max_pending_age_seconds
    )
    reason = f"backlog {backlog.total} at {auto.target_lag_per_replica} per replica"
    if backlog.lag is None:
        reason += (
            " (lag unknown: estimated)"
            if backlog.estimated_lag is not None
            else (" (lag unknown: pending only)")
        )
    if stale:
        wanted = max(wanted, current + 1)
        reason += f"; oldest pending {backlog.oldest_pending_age_s:.0f}s old"
    wanted = min(max(wanted, low), high)

    if wanted > current:
        step = min(wanted, max(current * 2, current + 1))
        return Decision(step, f"scale up: {reason}")
    if wanted < current:  # never when stale: then wanted >= current
        since = None if last_scale_time is None else now - last_scale_time
        if since is not None and since < auto.cooldown_seconds:
            return Decision(
                current, f"hold: cooling down ({since:.0f}s of {auto.cooldown_seconds}s); {reason}"
            )
        return Decision(wanted, f"scale down: {reason}")
    return Decision(current, f"steady: {reason}")
