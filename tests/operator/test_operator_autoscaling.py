"""The autoscaling decision: bounds, steps, the stabilization window, stale entries.

Unit cases first, then property-based sequences (hypothesis): lag/pending time series
driven through the decision over time, as the resync would, checking what must hold for
any series: bounds, step sizes, no scale-down within a cooldown of any change, at most
one scale-up per period, and one stuck entry never growing the set.
"""

from __future__ import annotations

import itertools

import pytest
from bookstream_operator.autoscaling import Backlog, Decision, History, decide
from bookstream_operator.spec import AutoscalingSpec
from hypothesis import given, settings
from hypothesis import strategies as st

AUTO = AutoscalingSpec(
    enabled=True,
    min_replicas=1,
    max_replicas=10,
    target_lag_per_replica=100,
    cooldown_seconds=60,
    max_pending_age_seconds=30,
    scale_up_period_seconds=15,
)
NOW = 10_000.0
FRESH = History()


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
    decision = decide(AUTO, Backlog(lag, pending), current, FRESH, NOW)
    assert decision.replicas == expected, decision.reason


def test_scale_up_at_most_doubles_per_step_and_one_step_per_period() -> None:
    assert decide(AUTO, Backlog(900, 0), 2, FRESH, NOW).replicas == 4
    assert decide(AUTO, Backlog(900, 0), 4, FRESH, NOW).replicas == 8
    assert decide(AUTO, Backlog(900, 0), 0, FRESH, NOW).replicas == 1  # min bound first
    zero_min = AutoscalingSpec(True, 0, 10, 100, 60, 30, 15)
    assert decide(zero_min, Backlog(900, 0), 0, FRESH, NOW).replicas == 1  # 0 -> 1 step
    held = decide(AUTO, Backlog(900, 0), 4, History(NOW - 5), NOW)
    assert held.replicas == 4 and held.reason.startswith("hold: scaled 5s ago")
    assert decide(AUTO, Backlog(900, 0), 4, History(NOW - 15), NOW).replicas == 8


def test_scale_down_waits_for_cooldown_and_at_most_halves() -> None:
    held = decide(AUTO, Backlog(0, 0), 5, History(NOW - 10), NOW)
    assert held.replicas == 5 and "cooling down" in held.reason
    down = decide(AUTO, Backlog(0, 0), 10, History(NOW - 61), NOW)
    assert down.replicas == 5 and down.reason.startswith("scale down")
    assert decide(AUTO, Backlog(0, 0), 5, History(NOW - 61), NOW).replicas == 3
    assert decide(AUTO, Backlog(0, 0), 2, History(NOW - 61), NOW).replicas == 1
    never_scaled = decide(AUTO, Backlog(120, 0), 5, FRESH, NOW)
    assert never_scaled.replicas == 3  # wants 2, at most halving: 5 -> 3


def test_scale_down_follows_the_highest_recommendation_of_the_window() -> None:
    # A burst 30 s ago recommended 8: a quiet sample now does not shrink below that.
    history = History(NOW - 600, ((NOW - 30, 8),))
    held = decide(AUTO, Backlog(0, 0), 8, history, NOW)
    assert held.replicas == 8 and "stabilizing" in held.reason
    # Once that recommendation has left the window, the set shrinks (one bounded step).
    later = decide(AUTO, Backlog(0, 0), 8, held.history, NOW + 61)
    assert later.replicas == 4


def test_min_and_max_bounds_apply_first() -> None:
    spec = AutoscalingSpec(True, 2, 4, 100, 60, 30, 15)
    assert decide(spec, Backlog(0, 0), 1, History(NOW), NOW).replicas == 2
    assert decide(spec, Backlog(0, 0), 9, History(NOW), NOW).replicas == 4
    assert decide(spec, Backlog(0, 0), 3, FRESH, NOW).replicas == 2


def test_unknown_lag_falls_back_to_counted_then_pending() -> None:
    counted = decide(AUTO, Backlog(None, 0, None, estimated_lag=350), 1, FRESH, NOW)
    assert counted.replicas == 2 and "estimated" in counted.reason  # doubling from 1
    pending_only = decide(AUTO, Backlog(None, 250, None, None), 3, FRESH, NOW)
    assert pending_only.replicas == 3 and "pending only" in pending_only.reason


def test_stale_entries_add_a_replica_only_up_to_the_backlog() -> None:
    stale = decide(AUTO, Backlog(0, 5, oldest_pending_age_s=45.0), 1, FRESH, NOW)
    assert stale.replicas == 2 and "oldest pending" in stale.reason
    # Never past what the backlog justifies (1 here) plus that one.
    capped = decide(AUTO, Backlog(0, 5, oldest_pending_age_s=45.0), 2, FRESH, NOW)
    assert capped.replicas == 2
    fresh = decide(AUTO, Backlog(0, 5, oldest_pending_age_s=5.0), 2, FRESH, NOW)
    assert fresh.replicas == 1
    # One stuck entry: one worker is all it can use; it neither grows nor holds a set.
    one = decide(AUTO, Backlog(0, 1, oldest_pending_age_s=999.0), 1, FRESH, NOW)
    assert one.replicas == 1
    big = decide(AUTO, Backlog(0, 1, oldest_pending_age_s=999.0), 10, History(NOW - 61), NOW)
    assert big.replicas == 5 and big.reason.startswith("scale down")
    # 50 stale entries justify one worker (plus one for the stuck ones), not ten.
    at_max = decide(AUTO, Backlog(0, 50, oldest_pending_age_s=45.0), 10, FRESH, NOW)
    assert at_max.replicas == 5 and at_max.reason.startswith("scale down")


def test_pending_entries_that_grow_with_the_workers_do_not_feed_the_stale_rule() -> None:
    """Breaker: one stuck entry plus a few in flight per worker (pending = 1 + 5 per
    replica) took 1 -> 10 replicas in two minutes and held there."""
    history, current, t = FRESH, 1, NOW
    for _ in range(40):  # ten minutes of passes every 15 s
        t += 15
        backlog = Backlog(0, 1 + 5 * current, oldest_pending_age_s=600.0)
        decision = decide(AUTO, backlog, current, history, t)
        history, current = decision.history, decision.replicas
        assert current <= 2, decision.reason


def test_no_signal_keeps_replicas() -> None:
    decision = decide(AUTO, None, 3, FRESH, NOW)
    assert decision.replicas == 3 and not decision.changed(3)


def test_the_window_stays_small() -> None:
    history, current = FRESH, 5
    for i in range(1000):  # a pass every 0.1 s with a falling recommendation
        d = decide(AUTO, Backlog(1000 - i, 0), current, history, NOW + i / 10)
        history, current = d.history, d.replicas
    assert len(history.recommendations) <= AUTO.max_replicas + 1


# --- sequences -----------------------------------------------------------------------

specs = st.builds(
    AutoscalingSpec,
    enabled=st.just(True),
    min_replicas=st.integers(0, 3),
    max_replicas=st.integers(4, 20),  # above every min_replicas
    target_lag_per_replica=st.integers(1, 200),
    cooldown_seconds=st.integers(0, 300),
    max_pending_age_seconds=st.integers(1, 120),
    scale_up_period_seconds=st.integers(0, 60),
)
samples = st.lists(
    st.tuples(
        st.floats(0.1, 60.0),  # seconds since the previous pass
        st.integers(0, 5000),  # lag
        st.integers(0, 500),  # pending
        st.one_of(st.none(), st.floats(0.0, 600.0)),  # oldest pending age
    ),
    min_size=1,
    max_size=120,
)


def run(
    auto: AutoscalingSpec, series: list[tuple[float, int, int, float | None]]
) -> list[tuple[float, int, Decision]]:
    """Drive the decision as the resync does: each pass sees the last decision's history."""
    now, current, history = NOW, auto.min_replicas, FRESH
    out = []
    for gap, lag, pending, age in series:
        now += gap
        decision = decide(auto, Backlog(lag, pending, age), current, history, now)
        out.append((now, current, decision))
        current, history = decision.replicas, decision.history
    return out


@settings(max_examples=300, deadline=None)
@given(specs, samples)
def test_sequences_stay_bounded_and_do_not_flap(
    auto: AutoscalingSpec, series: list[tuple[float, int, int, float | None]]
) -> None:
    changes: list[tuple[float, int]] = []  # (time, +1 up / -1 down)
    for now, before, decision in run(auto, series):
        after = decision.replicas
        assert auto.min_replicas <= after <= auto.max_replicas
        if after > before:
            assert after <= max(before * 2, before + 1), "step up bounded"
            if changes:
                assert now - changes[-1][0] >= auto.scale_up_period_seconds, "one up per period"
            changes.append((now, +1))
        elif after < before:
            assert after >= before - max(1, before // 2), "step down bounded"
            if changes:
                assert now - changes[-1][0] >= auto.cooldown_seconds, "down only after cooldown"
            changes.append((now, -1))
    # Direction changes: an up followed by a down is at least a cooldown apart.
    for (t1, d1), (t2, d2) in itertools.pairwise(changes):
        if d1 > 0 > d2:
            assert t2 - t1 >= auto.cooldown_seconds


@settings(max_examples=200, deadline=None)
@given(specs, st.lists(st.floats(0.1, 60.0), min_size=1, max_size=200))
def test_one_stuck_entry_never_reaches_max_replicas(
    auto: AutoscalingSpec, gaps: list[float]
) -> None:
    """One pending entry, ever older, nothing else: one worker at most (or min)."""
    series = [(gap, 0, 1, 10_000.0) for gap in gaps]
    for _, _, decision in run(auto, series):
        assert decision.replicas <= max(auto.min_replicas, 1) < auto.max_replicas
