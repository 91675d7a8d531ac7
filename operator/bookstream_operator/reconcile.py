"""One reconcile pass: spec -> applied objects, retired consumers, and a status.

Level-based and idempotent: every pass computes the whole desired state from the spec
(and, with autoscaling, from the backlog), applies all of it, and reports what it sees.
The kopf handlers call :func:`reconcile` and only write its status and post its events.

Every failure of a pass ends in the status, never in an exception: ``Ready=False`` with
the reason (``InvalidSpec``, ``Conflict``, ``RedisUnreachable``, ``ApplyFailed``), and
``observedGeneration`` stays where the last successful pass left it. A failure that the
same spec would meet again (an API 4xx such as 422 from validation or 403 from admission,
an invalid spec) is marked permanent: the periodic pass does not retry it until the
object changes. Without Redis nothing is applied: the library's claim cannot be checked
and workers without Redis could not work anyway; running workers keep running.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2
import redis.exceptions
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_core.types import ServiceName

from bookstream_operator import conditions, manifests, naming
from bookstream_operator.autoscaling import Decision, History, decide
from bookstream_operator.claim import Holder, claim
from bookstream_operator.cleanup import ConsumerRetirer, Outcome, Retirement
from bookstream_operator.conditions import Condition
from bookstream_operator.connection import connect, redis_url
from bookstream_operator.kube import Kube, SecretMissing, WorkloadState
from bookstream_operator.observe import GroupStatus, collect
from bookstream_operator.spec import LibrarySpec, SpecError, parse_spec
from bookstream_operator.types import Manifest

#: Status keys this operator owns; others (kopf's own ``status.kopf``) are never removed.
OWNED_STATUS_KEYS = frozenset({"observedGeneration", "conditions", *SERVICES})


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Result:
    #: The whole status this pass found (no key it does not know about).
    status: Manifest
    events: list[Event] = field(default_factory=list)
    #: The same spec would fail the same way: do not retry until the object changes.
    permanent_failure: bool = False

    def __post_init__(self) -> None:
        # An unknown value is an absent key: in a merge patch null means "delete".
        self.status = _without_nulls(self.status)


def _without_nulls(value: Manifest) -> Manifest:
    return {
        k: _without_nulls(v) if isinstance(v, dict) else v
        for k, v in value.items()
        if v is not None
    }


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    message: str
    permanent: bool = False


def is_paused(annotations: Mapping[str, str]) -> bool:
    return str(annotations.get(naming.PAUSED_ANNOTATION, "")).lower() == "true"


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


def _api_failure(exc: httpx2.HTTPError, what: str) -> Failure:
    if isinstance(exc, httpx2.HTTPStatusError):
        code = exc.response.status_code
        try:
            detail = str(exc.response.json().get("message") or "")
        except ValueError:
            detail = ""
        # 4xx answers come back for the same request; 408/409/429 are about timing.
        permanent = 400 <= code < 500 and code not in (408, 409, 429)
        return Failure("ApplyFailed", f"{what}: HTTP {code} {detail}".strip(), permanent)
    return Failure("ApplyFailed", f"{what}: {type(exc).__name__}: {exc}")


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
    decision = decide(
        spec.autoscaling, group.backlog if group else None, current, _history(previous, last), now
    )
    return decision.replicas, decision, decision.history.last_scale_time


def _history(previous: Mapping[str, Any], last: float | None) -> History:
    auto = previous.get("autoscaler")
    entries = auto.get("recommendations") if isinstance(auto, Mapping) else None
    window = tuple(
        (float(e["time"]), int(e["replicas"]))
        for e in entries or ()
        if isinstance(e, Mapping)
        and isinstance(e.get("time"), int | float)
        and isinstance(e.get("replicas"), int)
    )
    return History(last, window)


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
    previous_ready: Mapping[str, Any] = next(
        (c for c in old_conditions if c.get("type") == "Ready"), {}
    )
    events: list[Event] = []
    kept: Manifest = {k: v for k, v in status.items() if k in OWNED_STATUS_KEYS}

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
        kept["conditions"] = conditions.merge(old_conditions, [paused], stamp)
        return Result(kept, events)

    def failed(failure: Failure, extra: list[Condition], sections: Manifest) -> Result:
        """Ready=False with the reason; observedGeneration stays where it was."""
        out: Manifest = {}
        if status.get("observedGeneration") is not None:
            out["observedGeneration"] = status["observedGeneration"]
        out.update(sections)
        conds = [
            Condition("Ready", "False", failure.reason, failure.message),
            *extra,
            Condition("ReconciliationPaused", "False", "Reconciling"),
        ]
        out["conditions"] = conditions.merge(old_conditions, conds, stamp)
        if (previous_ready.get("reason"), previous_ready.get("message")) != (
            failure.reason,
            failure.message,
        ):
            events.append(Event("Warning", failure.reason, failure.message))
        return Result(out, events, permanent_failure=failure.permanent)

    try:
        spec = parse_spec(spec_body)
    except SpecError as exc:
        return failed(Failure("InvalidSpec", str(exc), permanent=True), [], {})

    keys = LibraryKeys(spec.library)
    groups: dict[ServiceName, GroupStatus] = {}
    retirements: dict[ServiceName, list[Retirement]] = {s: [] for s in SERVICES}
    redis_cond = Condition("RedisReachable", "True", "Connected", redis_url(spec.redis))
    replicas: dict[ServiceName, int] = {}
    decisions: dict[ServiceName, Decision | None] = {}
    scale_times: dict[ServiceName, float | None] = {}
    owner = manifests.Owner(name, namespace, uid)
    failure: Failure | None = None

    try:
        password: str | None = None
        if spec.redis.password_secret is not None:
            ref = spec.redis.password_secret
            password = await kube.read_secret(namespace, ref.name, ref.key)
        async with connect(spec.redis, password) as client:
            holder = await claim(client, keys, Holder(uid, namespace, name), kube.instance_uid)
            if holder is not None:
                message = f"library {spec.library!r} on this Redis is claimed by {holder}"
                return failed(Failure("Conflict", message), [redis_cond], {})
            for service in SERVICES:
                groups[service] = await collect(client, keys, service)
            for service in SERVICES:
                replicas[service], decisions[service], scale_times[service] = _decide_replicas(
                    spec, service, groups[service], _previous(status, service), now
                )
            # Apply first: a removed ordinal's pod must be on its way out before its
            # consumer can be retired (the retire script waits for its lock to go).
            try:
                for manifest in manifests.desired_objects(owner, spec, replicas):
                    await kube.apply(manifest)
            except httpx2.HTTPError as exc:
                failure = _api_failure(exc, f"applying {manifest['kind']} {_name(manifest)}")
            if failure is None:
                retirer = ConsumerRetirer(client, keys)
                for service in SERVICES:
                    retirements[service] = await retirer.scale_down(
                        namespace,
                        name,
                        service,
                        replicas[service],
                        groups[service].consumer_names(),
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
    except httpx2.HTTPError as exc:  # reading the Secret or the claim holder
        failure = _api_failure(exc, "reading the Redis password Secret")

    if redis_cond.status != "True":
        failure = Failure("RedisUnreachable", redis_cond.message)
        # Nothing was applied: report the workloads as they are, without Redis figures.
        groups.clear()
    for service in SERVICES:
        if service not in replicas:
            prev = _previous(status, service).get("replicas")
            replicas[service] = prev if isinstance(prev, int) else spec.service(service).replicas
            decisions[service] = None
            scale_times[service] = _parse_iso(_previous(status, service).get("lastScaleTime"))

    states: dict[ServiceName, WorkloadState | None] = {}
    for service in SERVICES:
        try:
            states[service] = await kube.workload_state(
                namespace, naming.workload_name(name, service)
            )
        except httpx2.HTTPError:
            states[service] = None
    sections: Manifest = {}
    for service in SERVICES:
        sections[service] = _service_status(
            namespace,
            name,
            service,
            replicas[service],
            states[service],
            groups.get(service),
            decisions[service],
            scale_times[service],
        )

    if failure is not None:
        return failed(failure, [redis_cond], sections)

    new_status: Manifest = {"observedGeneration": generation} if generation is not None else {}
    new_status.update(sections)
    for service in SERVICES:
        previous = _previous(status, service)
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


def _name(manifest: Manifest) -> str:
    return str((manifest.get("metadata") or {}).get("name"))


def _service_status(
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
        "lastScaleTime": _iso(last_scale) if last_scale is not None else None,
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
