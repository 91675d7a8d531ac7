"""The autoscaling decision: a pure function of the backlog, the bounds, the past and the clock.

The backlog is what the group has not finished: entries not yet delivered (lag) plus
entries delivered but not acknowledged (pending). Redis reports ``lag`` as unknown after
some deletions; then the status collector's bounded count of entries after the group's
last-delivered id stands in, and when even that is missing only pending counts.

It behaves like the HorizontalPodAutoscaler, so that one sample never moves it far:

* **Recommendation:** ``ceil(backlog / targetLagPerReplica)`` within the bounds.
* **Stale entries:** an oldest pending entry older than ``maxPendingAgeSeconds`` means the
  workers fall behind whatever the counts say: it asks for one more replica, but never for
  more replicas than there are unfinished entries (a worker needs an entry to work on), so
  one stuck entry alone never scales past one worker and never holds a larger set up.
* **Scale up:** at most doubling (at least +1) per step, and at most one step per
  ``scaleUpPeriodSeconds``: bursts are met within a few periods, one sample cannot jump.
* **Scale down:** the stabilization window: the target is the *highest* recommendation of
  the last ``cooldownSeconds`` (so a dip between two bursts does not shrink the set), only
  once ``cooldownSeconds`` have passed since the last change in either direction, and at
  most halving per step (10 -> 5 -> 3 -> 2 -> 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bookstream_operator.spec import AutoscalingSpec


@dataclass(frozen=True, slots=True)
class Backlog:
    lag: int | None
    pending: int
    oldest_pending_age_s: float | None = None
    #: Entries counted after the group's last-delivered id, when ``lag`` is unknown.
    estimated_lag: int | None = None
    #: Submissions not yet admitted into the inbox (Lending's): work waiting all the same.
    submissions: int = 0

    @property
    def undelivered(self) -> int:
        if self.lag is not None:
            return self.lag + self.submissions
        return (self.estimated_lag or 0) + self.submissions

    @property
    def total(self) -> int:
        return self.undelivered + self.pending


@dataclass(frozen=True, slots=True)
class History:
    """What the decision remembers between passes (kept in the status)."""

    last_scale_time: float | None = None
    #: (time, recommended replicas) of the passes within the stabilization window.
    recommendations: tuple[tuple[float, int], ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Decision:
    replicas: int
    reason: str
    recommendation: int = 0
    history: History = field(default_factory=History)

    def changed(self, current: int) -> bool:
        return self.replicas != current


def recommend(auto: AutoscalingSpec, backlog: Backlog, current: int) -> tuple[int, str]:
    """This sample's replicas, before the window and the step bounds."""
    wanted = math.ceil(backlog.total / auto.target_lag_per_replica)
    reason = f"backlog {backlog.total} at {auto.target_lag_per_replica} per replica"
    if backlog.lag is None:
        reason += (
            " (lag unknown: estimated)"
            if backlog.estimated_lag is not None
            else " (lag unknown: pending only)"
        )
    age = backlog.oldest_pending_age_s
    if age is not None and age > auto.max_pending_age_seconds:
        # One more worker may help an entry stuck with a slow one, but never past what the
        # backlog itself justifies plus that one: pending entries grow with the workers,
        # so counting them one per worker would feed itself up to maxReplicas.
        stale_wanted = min(current + 1, backlog.total, max(wanted, 1) + 1)
        if stale_wanted > wanted:
            wanted = stale_wanted
            reason += f"; oldest pending {age:.0f}s old"
    return min(max(wanted, auto.min_replicas), auto.max_replicas), reason


def decide(
    auto: AutoscalingSpec,
    backlog: Backlog | None,
    current: int,
    history: History,
    now: float,
) -> Decision:
    """How many workers one service should run now."""
    low, high = auto.min_replicas, auto.max_replicas
    bounded = min(max(current, low), high)
    if bounded != current:
        return Decision(bounded, f"outside bounds [{low}, {high}]", bounded, History(now, ()))
    if backlog is None:
        return Decision(
            current, "no backlog signal (Redis unreachable): unchanged", current, history
        )

    recommendation, reason = recommend(auto, backlog, current)
    window = [(t, r) for t, r in history.recommendations if now - t < auto.cooldown_seconds]
    window.append((now, recommendation))
    # Only the highest recommendation matters, and a later one outlives an earlier one: drop
    # every entry a later, higher-or-equal one dominates (at most maxReplicas + 1 remain).
    window = [
        (t, r) for i, (t, r) in enumerate(window) if all(r > later for _, later in window[i + 1 :])
    ]
    since = None if history.last_scale_time is None else now - history.last_scale_time

    def result(replicas: int, why: str) -> Decision:
        last = now if replicas != current else history.last_scale_time
        return Decision(replicas, why, recommendation, History(last, tuple(window)))

    if recommendation > current:
        if since is not None and since < auto.scale_up_period_seconds:
            return result(current, f"hold: scaled {since:.0f}s ago; {reason}")
        step = min(recommendation, max(current * 2, current + 1))
        return result(step, f"scale up: {reason}")
    # Stabilization: the highest recommendation of the window, never above the current set.
    stable = min(max(r for _, r in window), current)
    if stable < current:
        if since is not None and since < auto.cooldown_seconds:
            return result(
                current, f"hold: cooling down ({since:.0f}s of {auto.cooldown_seconds}s); {reason}"
            )
        step = max(stable, current - max(1, current // 2))
        return result(step, f"scale down: {reason}")
    if recommendation < current:
        return result(current, f"hold: stabilizing (higher recommendations in window); {reason}")
    return result(current, f"steady: {reason}")
