"""One reconcile pass: spec -> applied objects, retired consumers, and a status.

Level-based and idempotent: every pass computes the whole desired state from the spec
(and, with autoscaling, from the backlog), applies all of it, and reports what it sees.
The kopf handlers call :func:`reconcile` and only write its status and post its events.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.exceptions
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_core.types import ServiceName

from bookstream_operator import conditions, manifests, naming
from bookstream_operator.autoscaling import Decision, decide
from bookstream_operator.cleanup import ConsumerRetirer, Outcome, Retirement
from bookstream_operator.conditions import Condition
from bookstream_operator.connection import connect, redis_url
from bookstream_operator.kube import Kube, SecretMissing, WorkloadState
from bookstream_operator.observe import GroupStatus, collect
from bookstream_operator.spec import LibrarySpec, SpecError, parse_spec
from bookstream_operator.types import Manifest


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Result:
    status: Manifest
    events: list[Event] = field(default_factory=list)


def is_paused(annotations: Mapping[str, str]) -> bool:
    return str(annotations.get(naming.PAUSED_ANNOTATION, "")).lower() == "true"


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _previous(status: Mapping[str, Any], service: ServiceName) -> Mapping[str, Any]:
    value = status.get(service)
    return value if isinstance(value, Mapping) else {}


def _decide_replicas(
    spec: LibrarySpec,
    service: ServiceName,
    group: GroupStatus | None,
    previous: Mapping[str, Any],
    now: float,
) -> tuple[int, Decision | None, float | None]:
    """Replicas for one service, the autoscaler's decision if it ran, and last scale time."""
    last = _parse_iso(previous.get("lastScaleTime"))
    if not spec.autoscaling.enabled:
        return spec.service(service).replicas, None, last
    current = previous.get("replicas")
    current = current if isinstance(current, int) else spec.service(service).replicas
    decision = decide(spec.autoscaling, group.backlog if group else None, current, last, now)
    return decision.replicas, decision, now if decision.changed(current) else last


async def reconcile(
    kube: Kube,
    *,
    name: str,
    namespace: str,
    uid: str,
    generation: int | None,
    spec_body: Mapping[str, Any],
    status: Mapping[str, Any],
    annotations: Mapping[str, str],
    now: float,
) -> Result:
    stamp = _iso(now)
    old_conditions = status.get("conditions") or []
    events: list[Event] = []

    if is_paused(annotations):
        paused = Condition(
            "ReconciliationPaused",
            "True",
            "PauseAnnotation",
            f"{naming.PAUSED_ANNOTATION}=true: nothing is applied or retired",
        )
        was = {c.get("type"): c.get("status") for c in old_conditions}
        if was.get("ReconciliationPaused") != "True":
            events.append(Event("Normal", "ReconciliationPaused", paused.message))
        return Result({"conditions": conditions.merge(old_conditions, [paused], stamp)}, events)

    try:
        spec = parse_spec(spec_body)
    except SpecError as exc:
        bad = [
            Condition("Ready", "False", "InvalidSpec", str(exc)),
            Condition("ReconciliationPaused", "False", "Reconciling"),
        ]
        events.append(Event("Warning", "InvalidSpec", str(exc)))
        return Result(
            {
                "observedGeneration": generation,
                "conditions": conditions.merge(old_conditions, bad, stamp),
            },
            events,
        )

    keys = LibraryKeys(spec.library)
    groups: dict[ServiceName, GroupStatus] = {}
    retirements: dict[ServiceName, list[Retirement]] = {s: [] for s in SERVICES}
    redis_cond = Condition("RedisReachable", "True", "Connected", redis_url(spec.redis))
    password: str | None = None
    replicas: dict[ServiceName, int] = {}
    decisions: dict[ServiceName, Decision | None] = {}
    scale_times: dict[ServiceName, float | None] = {}
    owner = manifests.Owner(name, namespace, uid)

    try:
        if spec.redis.password_secret is not None:
            ref = spec.redis.password_secret
            password = await kube.read_secret(namespace, ref.name, ref.key)
        async with connect(spec.redis, password) as client:
            for service in SERVICES:
                groups[service] = await collect(client, keys, service)
            for service in SERVICES:
                replicas[service], decisions[service], scale_times[service] = _decide_replicas(
                    spec, service, groups[service], _previous(status, service), now
                )
            # Apply first: a removed ordinal's pod must be on its way out before its
            # consumer can be retired (the retire script waits for its lock to go).
            for manifest in manifests.desired_objects(owner, spec, replicas):
                await kube.apply(manifest)
            retirer = ConsumerRetirer(client, keys)
            for service in SERVICES:
                retirements[service] = await retirer.scale_down(
                    name, service, replicas[service], groups[service].consumer_names()
                )
                if any(r.outcome is Outcome.RETIRED for r in retirements[service]):
                    groups[service] = await collect(client, keys, service)
    except SecretMissing as exc:
        redis_cond = Condition("RedisReachable", "False", "PasswordSecretMissing", str(exc))
    except (redis.exceptions.RedisError, OSError) as exc:
        reason = (
            "AuthenticationFailed"
            if isinstance(exc, redis.exceptions.AuthenticationError)
            else "ConnectionFailed"
        )
        redis_cond = Condition("RedisReachable", "False", reason, f"{type(exc).__name__}: {exc}")

    if redis_cond.status != "True":
        # Without Redis, still keep the workloads as the spec says (they retry on their own),
        # but never scale down by autoscaling and never retire anything.
        for service in SERVICES:
            prev = _previous(status, service).get("replicas")
            if service not in replicas:
                replicas[service] = (
                    prev
                    if spec.autoscaling.enabled and isinstance(prev, int)
                    else spec.service(service).replicas
                )
                decisions[service] = None
                scale_times[service] = _parse_iso(_previous(status, service).get("lastScaleTime"))
        for manifest in manifests.desired_objects(owner, spec, replicas):
            await kube.apply(manifest)
        if status.get("conditions") is None or any(
            c.get("type") == "RedisReachable" and c.get("status") == "True" for c in old_conditions
        ):
            events.append(Event("Warning", redis_cond.reason, redis_cond.message))

    states = {
        s: await kube.workload_state(namespace, naming.workload_name(name, s)) for s in SERVICES
    }
    new_status: Manifest = {"observedGeneration": generation}
    for service in SERVICES:
        previous = _previous(status, service)
        section = _service_status(
            name,
            service,
            replicas[service],
            states[service],
            groups.get(service),
            decisions[service],
            scale_times[service],
        )
        new_status[service] = section
        if previous.get("replicas") not in (None, replicas[service]):
            decision = decisions[service]
            why = decision.reason if decision is not None else "spec changed"
            events.append(
                Event(
                    "Normal",
                    "Scaled",
                    f"{service}: {previous.get('replicas')} -> {replicas[service]} ({why})",
                )
            )
        moved = [r for r in retirements[service] if r.outcome is Outcome.RETIRED]
        if moved:
            text = ", ".join(f"{r.consumer} ({r.moved} pending -> {r.target})" for r in moved)
            events.append(Event("Normal", "ConsumersRetired", f"{service}: {text}"))

    conds = _conditions(spec, redis_cond, replicas, states, groups, retirements)
    new_status["conditions"] = conditions.merge(old_conditions, conds, stamp)
    if generation is not None and status.get("observedGeneration") != generation:
        events.append(Event("Normal", "Reconciled", f"generation {generation} applied"))
    return Result(new_status, events)


def _service_status(
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
        "workers": naming.worker_names(instance, service, replicas),
        "lastScaleTime": _iso(last_scale) if last_scale is not None else None,
    }
    if group is not None:
        section.update(group.to_status())
    if decision is not None:
        section["autoscaler"] = {"desiredReplicas": decision.replicas, "reason": decision.reason}
    return section


def _conditions(
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
    draining = [r.consumer for s in SERVICES for r in retirements[s] if r.outcome is Outcome.ALIVE]
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
        r.consumer for s in SERVICES for r in retirements[s] if r.outcome is Outcome.NO_SURVIVOR
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
