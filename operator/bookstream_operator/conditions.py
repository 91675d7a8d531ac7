"""Status conditions the Strimzi way: type, status, reason, message, lastTransitionTime.

``lastTransitionTime`` changes only when a condition's status flips, so that a reader
can tell how long something has been true; reason and message follow the latest pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]
#: The order conditions are written in (others keep their relative order after these).
ORDER = ("Ready", "RedisReachable", "Progressing", "Warning", "ReconciliationPaused")


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def merge(
    previous: Iterable[Mapping[str, Any]], current: Iterable[Condition], now: str
) -> list[dict[str, str]]:
    """The new condition list: ``current`` replaces same-typed ones, others are kept."""
    old = {str(c.get("type")): dict(c) for c in previous if c.get("type")}
    new: dict[str, dict[str, str]] = {
        k: {str(a): str(b) for a, b in v.items()} for k, v in old.items()
    }
    for cond in current:
        before = old.get(cond.type)
        changed = before is None or before.get("status") != cond.status
        new[cond.type] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": now
            if changed or before is None
            else str(before.get("lastTransitionTime") or now),
        }
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(new.values(), key=lambda c: rank.get(c["type"], len(ORDER)))
