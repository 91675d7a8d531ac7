"""The operator's own configuration, built once at the entry point from the environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bookstream_core import settings as table
from bookstream_core.settings import ConfigError
from bookstream_core.tls import FILES, check_tls_files

from bookstream_operator.kube import Kube

PREFIX = "BOOKSTREAM_OPERATOR_"
#: The same log variables as the workers' (the chart sets both for the operator too).
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("console", "json")


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
    #: ``BOOKSTREAM_LOG_LEVEL`` / ``BOOKSTREAM_LOG_FORMAT``, as for the workers.
    log_level: str = "info"
    log_format: str = "console"
    #: The operator's own TLS files (``tls_ca``, ``tls_cert``, ``tls_key``) from the
    #: workers' variables (BOOKSTREAM_REDIS_TLS_CA...): a LibraryInstance names no CA, so a
    #: Redis whose certificate a private CA signed needs its CA mounted here.
    tls_files: Mapping[str, str] = field(default_factory=dict)
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
        log_level = (env.get("BOOKSTREAM_LOG_LEVEL") or "info").lower()
        log_format = (env.get("BOOKSTREAM_LOG_FORMAT") or "console").lower()
        if log_level not in LOG_LEVELS:
            raise OperatorConfigError(
                f"BOOKSTREAM_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}"
            )
        if log_format not in LOG_FORMATS:
            raise OperatorConfigError(
                f"BOOKSTREAM_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}"
            )
        namespaces = tuple(n.strip() for n in (get("NAMESPACES") or "").split(",") if n.strip())
        given = {key: table.raw(key, None, env)[0] for key in FILES}
        tls_files = {key: value for key, value in given.items() if value is not None}
        names = {key: table.BY_KEY[key].variable for key in FILES}  # it has no options
        try:  # now, so that a wrong path stops the operator at start with one line
            check_tls_files(True, tls_files, names)
        except ConfigError as exc:
            raise OperatorConfigError(str(exc)) from None
        return cls(
            interval_s=interval,
            namespaces=namespaces,
            peering=get("PEERING") or "",
            priority=priority,
            liveness=get("LIVENESS") or cls.liveness,
            watch_timeout_s=watch_timeout,
            log_level=log_level,
            log_format=log_format,
            tls_files=tls_files,
        )
