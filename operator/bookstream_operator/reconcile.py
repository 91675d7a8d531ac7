"""One reconcile pass: spec -> applied objects, retired consumers, and a status.

Level-based and idempotent: every pass computes the whole desired state from the spec
(and, with autoscaling, from the backlog), applies all of it, and reports what it sees.
The kopf handlers call :func:`reconcile` and only write its status and post its events.

Every failure of a pass ends in the status, never in an exception: ``Ready=False`` with
the reason (``InvalidSpec``, ``Conflict``, ``RedisUnreachable``, ``ApplyFailed``, or the
credentials' problem: ``SecretNotLabelled`` and the like, see ``credentials.py``), and
``observedGeneration`` stays where the last successful pass left it. A failure that the
same spec would meet again (an API 4xx such as 422 from validation or 403 from admission,
an invalid spec) is marked permanent: the periodic pass does not retry it until the
object changes. Without Redis nothing is applied: the library's claim cannot be checked
and workers without Redis could not work anyway; running workers keep running.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2
import msgspec
import redis.exceptions
from bookstream_core.config import ConfigError
from bookstream_core.functions import FunctionsUnavailable
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_core.types import ServiceName

from bookstream_operator import conditions, manifests, naming
from bookstream_operator.autoscaling import Decision, History, decide
from bookstream_operator.claim import Holder, claim
from bookstream_operator.cleanup import ConsumerRetirer, Retirement, RetirementResult
from bookstream_operator.conditions import Condition
from bookstream_operator.connection import connect, redis_settings
from bookstream_operator.credentials import Credentials, CredentialsError, operator_credentials
from bookstream_operator.kube import Kube, WorkloadState
from bookstream_operator.observe import GroupStatus, collect
from bookstream_operator.spec import LibrarySpec, SpecError, parse_spec
from bookstream_operator.status import (
    OWNED_STATUS_KEYS,
    build_conditions,
    iso,
    parse_iso,
    service_status,
    without_nulls,
)
from bookstream_operator.types import Manifest


@dataclass(frozen=True, slots=True)
class KubeEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Result:
    #: The whole status this pass found (no key it does not know about).
    status: Manifest
    events: list[KubeEvent] = field(default_factory=list)
    #: The same spec would fail the same way: do not retry until the object changes.
    permanent_failure: bool = False

    def __post_init__(self) -> None:
        # An unknown value is an absent key: in a merge patch null means "delete".
        self.status = without_nulls(self.status)

    def redacted(self, secrets: Iterable[str]) -> Result:
        """Each secret in a condition's or an event's message replaced by ``***``.

        No message is built from a Secret's value; this keeps it so should a library's
        error text ever quote one (status and events are readable by many more people
        than Secrets are)."""
        secrets = [s for s in secrets if s]

        def clean(text: str) -> str:
            for secret in secrets:
                text = text.replace(secret, "***")
            return text

        for cond in self.status.get("conditions") or []:
            cond["message"] = clean(str(cond.get("message", "")))
        self.events = [KubeEvent(e.type, e.reason, clean(e.message)) for e in self.events]
        return self


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    message: str
    permanent: bool = False


def is_paused(annotations: Mapping[str, str]) -> bool:
    return str(annotations.get(naming.PAUSED_ANNOTATION, "")).lower() == "true"


def _previous(status: Mapping[str, Any], service: ServiceName) -> Mapping[str, Any]:
    value = status.get(service)
    return value if isinstance(value, Mapping) else {}


def _api_failure(exc: Exception, what: str) -> Failure:
    if not isinstance(exc, httpx2.HTTPError):
        # The object could not even be built (a placement field of the wrong type that the
        # CRD passes through, a Secret that is not UTF-8): the same input fails again.
        return Failure("ApplyFailed", f"{what}: {type(exc).__name__}: {exc}", permanent=True)
    if isinstance(exc, httpx2.HTTPStatusError):
        code = exc.response.status_code
        try:
            detail = str(exc.response.json().get("message") or "")
        except ValueError:
            detail = ""
        # 4xx answers come back for the same request; 408/409/429 are about timing, and
        # 401 about the operator's own token (rotated, briefly invalid), not the object.
        permanent = 400 <= code < 500 and code not in (401, 408, 409, 429)
        return Failure("ApplyFailed", f"{what}: HTTP {code} {detail}".strip(), permanent)
    return Failure("ApplyFailed", f"{what}: {type(exc).__name__}: {exc}")


async def _stop_own_workers(
    kube: Kube, owner: manifests.Owner, spec: LibrarySpec, namespace: str, name: str
) -> bool:
    """Scale this instance's workers to 0 if it has any running; True if it did. An
    instance that never ran creates nothing."""
    try:
        states = [
            await kube.workload_state(namespace, naming.workload_name(name, service))
            for service in SERVICES
        ]
        if not any(state is not None and state.replicas > 0 for state in states):
            return False
        for manifest in manifests.desired_objects(owner, spec, dict.fromkeys(SERVICES, 0)):
            if manifest["kind"] == "StatefulSet":
                await kube.apply(manifest)
    except (httpx2.HTTPError, ValueError, TypeError, msgspec.ValidationError):
        return False
    return True


def _decide_replicas(
    spec: LibrarySpec,
    service: ServiceName,
    group: GroupStatus | None,
    previous: Mapping[str, Any],
    now: float,
) -> tuple[int, Decision | None, float | None]:
    """Replicas for one service, the autoscaler's decision if it ran, and last scale time."""
    last = parse_iso(previous.get("lastScaleTime"))
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
    tls_files: Mapping[str, str] | None = None,
) -> Result:
    stamp = iso(now)
    old_conditions = status.get("conditions") or []
    previous_ready: Mapping[str, Any] = next(
        (c for c in old_conditions if c.get("type") == "Ready"), {}
    )
    events: list[KubeEvent] = []
    kept: Manifest = {k: v for k, v in status.items() if k in OWNED_STATUS_KEYS}
    #: The Secret values this pass read: never in a message it writes.
    secrets: list[str] = []

    if is_paused(annotations):
        paused = Condition(
            "ReconciliationPaused",
            "True",
            "PauseAnnotation",
            f"{naming.PAUSED_ANNOTATION}=true: nothing is applied or retired",
        )
        was = {c.get("type"): c.get("status") for c in old_conditions}
        if was.get("ReconciliationPaused") != "True":
            events.append(KubeEvent("Normal", "ReconciliationPaused", paused.message))
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
        # What this pass did not get to evaluate is not left saying what an earlier one saw.
        given = {c.type for c in conds}
        conds += [
            Condition(kind, "Unknown", "NotEvaluated", f"the pass failed: {failure.reason}")
            for kind in conditions.ORDER
            if kind not in given
        ]
        out["conditions"] = conditions.merge(old_conditions, conds, stamp)
        if (previous_ready.get("reason"), previous_ready.get("message")) != (
            failure.reason,
            failure.message,
        ):
            events.append(KubeEvent("Warning", failure.reason, failure.message))
        return Result(out, events, permanent_failure=failure.permanent).redacted(secrets)

    try:
        spec = parse_spec(spec_body)
        # Where Redis is, for messages: the address without credentials.
        where = redis_settings(spec.redis, Credentials(), tls_files).describe()
    except (SpecError, ConfigError) as exc:
        return failed(Failure("InvalidSpec", str(exc), permanent=True), [], {})

    keys = LibraryKeys(spec.library)
    groups: dict[ServiceName, GroupStatus] = {}
    retirements: dict[ServiceName, list[Retirement]] = {s: [] for s in SERVICES}
    redis_cond = Condition("RedisReachable", "True", "Connected", where)
    replicas: dict[ServiceName, int] = {}
    decisions: dict[ServiceName, Decision | None] = {}
    scale_times: dict[ServiceName, float | None] = {}
    owner = manifests.Owner(name, namespace, uid)
    failure: Failure | None = None

    try:
        credentials = await operator_credentials(kube, namespace, spec)
        secrets.append(credentials.password or "")
        async with connect(redis_settings(spec.redis, credentials, tls_files)) as client:
            holder = await claim(client, keys, Holder(uid, namespace, name), kube.instance_uid)
            if holder is not None:
                message = f"library {spec.library!r} on this Redis is claimed by {holder}"
                if await _stop_own_workers(kube, owner, spec, namespace, name):
                    # The claim was lost (Redis lost its data, say) and another instance
                    # took the library: two sets of workers must not consume it.
                    message += "; this instance's workers were scaled to 0"
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
            except (httpx2.HTTPError, ValueError, TypeError, msgspec.ValidationError) as exc:
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
                    if any(r.outcome is RetirementResult.RETIRED for r in retirements[service]):
                        groups[service] = await collect(client, keys, service)
    except CredentialsError as exc:
        # Retried every interval: labelling a Secret or granting a Role changes no object
        # the operator watches.
        failure = Failure(exc.reason, str(exc))
        redis_cond = Condition(
            "RedisReachable", "Unknown", "NoCredentials", f"not tried: {exc.reason}"
        )
    except FunctionsUnavailable as exc:  # Redis answers, but setup has not loaded them
        failure = Failure("FunctionsMissing", str(exc))
    except (redis.exceptions.RedisError, OSError) as exc:
        reason = (
            "AuthenticationFailed"
            if isinstance(exc, redis.exceptions.AuthenticationError)
            # The operator's ACL user lacks a command or key it needs.
            else "PermissionDenied"
            if isinstance(exc, redis.exceptions.NoPermissionError)
            else "ConnectionFailed"
        )
        redis_cond = Condition("RedisReachable", "False", reason, f"{type(exc).__name__}: {exc}")
    except (httpx2.HTTPError, ValueError) as exc:  # the Secret (or the claim holder's object)
        failure = _api_failure(exc, "reading the Redis credentials Secret or the claim's holder")

    if redis_cond.status == "False":
        failure = Failure("RedisUnreachable", redis_cond.message)
    if redis_cond.status != "True":
        # Nothing was applied: report the workloads as they are, without Redis figures.
        groups.clear()
    if failure is not None:
        # A failed pass scaled nothing: report the replicas as they were, not as decided.
        replicas.clear()
    kept_autoscaler: dict[ServiceName, Any] = {}
    for service in SERVICES:
        if service not in replicas:
            # The autoscaler's window survives a failed pass (or the next sample alone
            # would decide a scale-down).
            kept_autoscaler[service] = _previous(status, service).get("autoscaler")
            prev = _previous(status, service).get("replicas")
            replicas[service] = prev if isinstance(prev, int) else spec.service(service).replicas
            decisions[service] = None
            scale_times[service] = parse_iso(_previous(status, service).get("lastScaleTime"))

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
        sections[service] = service_status(
            namespace,
            name,
            service,
            replicas[service],
            states[service],
            groups.get(service),
            decisions[service],
            scale_times[service],
        )
        if kept_autoscaler.get(service) is not None:
            sections[service]["autoscaler"] = kept_autoscaler[service]

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
                KubeEvent(
                    "Normal",
                    "Scaled",
                    f"{service}: {previous.get('replicas')} -> {replicas[service]} ({why})",
                )
            )
        moved = [r for r in retirements[service] if r.outcome is RetirementResult.RETIRED]
        if moved:
            text = ", ".join(f"{r.consumer} ({r.moved} pending -> {r.target})" for r in moved)
            events.append(KubeEvent("Normal", "ConsumersRetired", f"{service}: {text}"))

    conds = build_conditions(spec, redis_cond, replicas, states, groups, retirements)
    new_status["conditions"] = conditions.merge(old_conditions, conds, stamp)
    if generation is not None and status.get("observedGeneration") != generation:
        events.append(KubeEvent("Normal", "Reconciled", f"generation {generation} applied"))
    return Result(new_status, events).redacted(secrets)


def _name(manifest: Manifest) -> str:
    return str((manifest.get("metadata") or {}).get("name"))
