"""The operator's own configuration, built once at the entry point from the environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bookstream_core import settings as table
from bookstream_core.settings import ConfigError
from bookstream_core.tls import FILES, check_tls_files

from bookstream_operator.kube import Kube


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
        """From the one settings table (bookstream_core.settings: its ``operator`` rows and
        those it shares with the workers), variables only."""
        try:
            interval = table.seconds("operator_interval", None, env)
            priority = table.integer("operator_priority", None, env) or 0
            watch_timeout = table.integer("operator_watch_timeout", None, env)
            log_level = table.text("log_level", None, env) or "info"
            log_format = table.text("log_format", None, env) or "console"
        except ConfigError as exc:
            raise OperatorConfigError(str(exc)) from None
        assert watch_timeout is not None  # the row has a default

        def get(key: str) -> str:
            return table.text(key, None, env) or ""

        namespaces = tuple(n.strip() for n in get("operator_namespaces").split(",") if n.strip())
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
            peering=get("operator_peering"),
            priority=priority,
            liveness=get("operator_liveness"),
            watch_timeout_s=watch_timeout,
            log_level=log_level,
            log_format=log_format,
            tls_files=tls_files,
        )
