"""The status a pass writes: its sections, its conditions, and the patch that writes it.

A status is written as a JSON merge patch on the status subresource, which keeps every key
it does not mention: :func:`status_patch` sends null for each key a pass stopped producing.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from bookstream_core.keys import SERVICES
from bookstream_core.types import ServiceName

from bookstream_operator import naming
from bookstream_operator.autoscaling import Decision
from bookstream_operator.cleanup import Retirement, RetirementResult
from bookstream_operator.conditions import Condition
from bookstream_operator.kube import WorkloadState
from bookstream_operator.observe import GroupStatus
from bookstream_operator.spec import LibrarySpec
from bookstream_operator.types import Manifest

#: Status keys this operator owns; others (kopf's own ``status.kopf``) are never removed.
OWNED_STATUS_KEYS = frozenset({"observedGeneration", "conditions", *SERVICES})


def without_nulls(value: Manifest) -> Manifest:
    return {
        k: without_nulls(v) if isinstance(v, dict) else v for k, v in value.items() if v is not None
    }


def status_patch(previous: Mapping[str, Any], new: Mapping[str, Any]) -> Manifest:
    """The JSON merge patch (RFC 7386) that turns ``previous`` into ``new``.

    Keys of ``previous`` that ``new`` lacks are sent as null (a merge patch keeps what
    it does not mention), at every depth of nested objects; lists are replaced whole.
    At the top level only the operator's own keys are ever removed.
    """
    return _diff(previous, new, top=True)


def _diff(previous: Mapping[str, Any], new: Mapping[str, Any], *, top: bool = False) -> Manifest:
    out: Manifest = {}
    for key, value in new.items():
        before = previous.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            out[key] = _diff(before, value)
        else:
            out[key] = value
    for key in previous:
        if key not in new and (not top or key in OWNED_STATUS_KEYS):
            out[key] = None
    return out


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def service_status(
    namespace: str,
    instance: str,
    service: ServiceName,
    replicas: int,
    state: WorkloadState | None,
    group: GroupStatus | None,
    decision: Decision | None,
    last_scale: float | None,
) -> Manifest:
    section: Manifest = {
        "replicas": replicas,
        "readyReplicas": state.ready if state else 0,
        "updatedReplicas": state.updated if state else 0,
        "selector": naming.selector_string(instance, service),
        "workers": naming.worker_names(namespace, instance, service, replicas),
        "lastScaleTime": iso(last_scale) if last_scale is not None else None,
    }
    if group is not None:
        section.update(group.to_status())
    if decision is not None:
        section["autoscaler"] = {
            "desiredReplicas": decision.replicas,
            "recommendation": decision.recommendation,
            "reason": decision.reason,
            "recommendations": [
                {"time": round(t, 3), "replicas": r} for t, r in decision.history.recommendations
            ],
        }
    return section


def build_conditions(
    spec: LibrarySpec,
    redis_cond: Condition,
    replicas: dict[ServiceName, int],
    states: dict[ServiceName, WorkloadState | None],
    groups: dict[ServiceName, GroupStatus],
    retirements: dict[ServiceName, list[Retirement]],
) -> list[Condition]:
    behind = []
    for s in SERVICES:
        state = states[s]
        count = state.ready if state else 0
        if state is None or count < replicas[s] or state.updated < replicas[s]:
            behind.append(f"{s}: {count}/{replicas[s]} ready")
    draining = [
        r.consumer for s in SERVICES for r in retirements[s] if r.outcome is RetirementResult.ALIVE
    ]
    if behind:
        progressing = Condition("Progressing", "True", "WorkersNotReady", "; ".join(behind))
    elif draining:
        progressing = Condition(
            "Progressing",
            "True",
            "DrainingRemovedWorkers",
            "waiting for removed workers to stop: " + ", ".join(draining),
        )
    else:
        progressing = Condition("Progressing", "False", "Stable", "all workers ready")

    warnings = []
    for s, g in groups.items():
        if g.dead_letters:
            warnings.append(f"{s}: {g.dead_letters} dead letters")
        age = g.oldest_pending_age_s
        if age is not None and age > spec.autoscaling.max_pending_age_seconds:
            warnings.append(f"{s}: oldest pending entry {age:.0f}s old")
    stranded = [
        r.consumer
        for s in SERVICES
        for r in retirements[s]
        if r.outcome is RetirementResult.NO_SURVIVOR
    ]
    if stranded:
        warnings.append("pending entries wait for a worker (scaled to 0): " + ", ".join(stranded))
    warning = (
        Condition("Warning", "True", "AttentionNeeded", "; ".join(warnings))
        if warnings
        else Condition("Warning", "False", "None")
    )

    if redis_cond.status != "True":
        ready = Condition("Ready", "False", "RedisUnreachable", redis_cond.message)
    elif behind:
        ready = Condition("Ready", "False", "WorkersNotReady", "; ".join(behind))
    else:
        ready = Condition(
            "Ready",
            "True",
            "WorkersReady",
            ", ".join(f"{s}: {replicas[s]} ready" for s in SERVICES),
        )
    paused = Condition("ReconciliationPaused", "False", "Reconciling")
    return [ready, redis_cond, progressing, warning, paused]
