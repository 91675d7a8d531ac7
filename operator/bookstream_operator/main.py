"""``bookstream-operator``: build the configuration from the environment and run kopf."""

from __future__ import annotations

import logging
import os
import sys

import kopf
from bookstream_core.usage import error_line

from bookstream_operator.handlers import register
from bookstream_operator.settings import OperatorConfig, OperatorConfigError


def main() -> None:
    try:
        config = OperatorConfig.from_env(os.environ)
    except OperatorConfigError as exc:
        print(error_line("bookstream-operator", exc), file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(config)
    registry = kopf.OperatorRegistry()
    register(registry, config)
    kopf.run(
        registry=registry,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=not config.peering,
        peering_name=config.peering or None,
        priority=config.priority,
        liveness_endpoint=config.liveness,
    )


def configure_logging(config: OperatorConfig) -> None:
    """kopf's own log handler, in the format and at the level the environment asks for."""
    kopf.configure(
        debug=config.log_level == "debug",
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
    )
    # kopf.configure knows only debug/info/warning; set the exact level afterwards.
    logging.getLogger().setLevel(config.log_level.upper())


if __name__ == "__main__":
    main()
