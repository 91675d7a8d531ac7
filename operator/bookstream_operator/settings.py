"""The operator's own configuration, built once at the entry point from the environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bookstream_operator.kube import Kube

PREFIX = "BOOKSTREAM_OPERATOR_"


class OperatorConfigError(ValueError):
    pass


@dataclass(frozen=True)
class OperatorConfig:
    #: Seconds between two reconcile passes of one LibraryInstance (status, autoscaling).
    interval_s: float = 15.0
    #: Empty: watch every namespace (needs a ClusterRole); else only these.
    namespaces: tuple[str, ...] = ()
    #: kopf peering: "" runs standalone (one replica, Recreate strategy); a name peers.
    peering: str = ""
    priority: int = 0
    liveness: str = "http://0.0.0.0:8080/healthz"
    watch_timeout_s: int = 300
    kube_factory: Callable[[], Kube] = field(default=Kube.from_env)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorConfig:
        def get(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value if value else None

        try:
            interval = float(get("INTERVAL") or cls.interval_s)
            priority = int(get("PRIORITY") or 0)
            watch_timeout = int(get("WATCH_TIMEOUT") or cls.watch_timeout_s)
        except ValueError as exc:
            raise OperatorConfigError(f"bad {PREFIX}* setting: {exc}") from None
        if interval <= 0:
            raise OperatorConfigError(f"{PREFIX}INTERVAL must be > 0")
        namespaces = tuple(n.strip() for n in (get("NAMESPACES") or "").split(",") if n.strip())
        return cls(
            interval_s=interval,
            namespaces=namespaces,
            peering=get("PEERING") or "",
            priority=priority,
            liveness=get("LIVENESS") or cls.liveness,
            watch_timeout_s=watch_timeout,
        )
