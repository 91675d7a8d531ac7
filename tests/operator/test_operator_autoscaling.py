"""The autoscaling decision: bounds, cooldown, lag fallback, stale pending entries."""

from __future__ import annotations

import pytest
from bookstream_operator.autoscaling import Backlog, decide
from bookstream_operator.spec import AutoscalingSpec

AUTO = AutoscalingSpec(
    enabled=True,
    min_replicas=1,
    max_replicas=10,
    target_lag_per_replica=100,
    cooldown_seconds=60,
    max_pending_age_seconds=30,
)
NOW = 10_000.0


@pytest.mark.parametrize(
    ("lag", "pending", "current", "expected"),
    [
        (0, 0, 1, 1),  # idle stays at min
        (250, 0, 3, 3),  # ceil(250/100) = 3: steady
        (300, 50, 4, 4),  # lag + pending = 350 -> 4
        (1000, 0, 5, 10),  # wants 10, may double from 5
        (5000, 0, 10, 10),  # capped at max
    ],
)
def test_backlog_over_target_per_replica(
    lag: int, pending: int, current: int, expected: int
) -> None:
    decision = decide(AUTO, Backlog(lag, pending), current, None, NOW)
    assert decision.replicas == expected, decision.reason


def test_scale_up_at_most_doubles_per_step() -> None:
    assert decide(AUTO, Backlog(900, 0), 2, None, NOW).replicas == 4
    assert decide(AUTO, Backlog(900, 0), 4, None, NOW).replicas == 8
    assert decide(AUTO, Backlog(900, 0), 0, None, NOW).replicas == 1  # min bound first
    zero_min = AutoscalingSpec(True, 0, 10, 100, 60, 30)
    assert decide(zero_min, Backlog(900, 0), 0, None, NOW).replicas == 1  # 0 -> 1 step


def test_scale_up_ignores_cooldown() -> None:
    decision = decide(AUTO, Backlog(400, 0), 2, NOW - 1, NOW)
    assert decision.replicas == 4 and decision.reason.startswith("scale up")


def test_scale_down_waits_for_cooldown() -> None:
    held = decide(AUTO, Backlog(0, 0), 5, NOW - 10, NOW)
    assert held.replicas == 5 and "cooling down" in held.reason
    down = decide(AUTO, Backlog(0, 0), 5, NOW - 61, NOW)
    assert down.replicas == 1 and down.reason.startswith("scale down")
    never_scaled = decide(AUTO, Backlog(120, 0), 5, None, NOW)
    assert never_scaled.replicas == 2


def test_min_and_max_bounds_apply_first() -> None:
    spec = AutoscalingSpec(True, 2, 4, 100, 60, 30)
    assert decide(spec, Backlog(0, 0), 1, NOW, NOW).replicas == 2
    assert decide(spec, Backlog(0, 0), 9, NOW, NOW).replicas == 4
    assert decide(spec, Backlog(0, 0), 3, None, NOW).replicas == 2


def test_unknown_lag_falls_back_to_counted_then_pending() -> None:
    counted = decide(AUTO, Backlog(None, 0, None, estimated_lag=350), 1, None, NOW)
    assert counted.replicas == 2 and "estimated" in counted.reason  # doubling from 1
    pending_only = decide(AUTO, Backlog(None, 250, None, None), 3, None, NOW)
    assert pending_only.replicas == 3 and "pending only" in pending_only.reason


def test_stale_pending_entries_scale_up_and_block_scale_down() -> None:
    stale = decide(AUTO, Backlog(0, 5, oldest_pending_age_s=45.0), 2, None, NOW)
    assert stale.replicas == 3 and "oldest pending" in stale.reason
    fresh = decide(AUTO, Backlog(0, 5, oldest_pending_age_s=5.0), 2, None, NOW)
    assert fresh.replicas == 1
    at_max = decide(AUTO, Backlog(0, 5, oldest_pending_age_s=45.0), 10, None, NOW)
    assert at_max.replicas == 10


def test_no_signal_keeps_replicas() -> None:
    decision = decide(AUTO, None, 3, None, NOW)
    assert decision.replicas == 3 and not decision.changed(3)
