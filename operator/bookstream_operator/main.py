"""``bookstream-operator``: build the configuration from the environment and run kopf."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import version

import kopf
from bookstream_core.usage import error_line

from bookstream_operator.handlers import register
from bookstream_operator.settings import OperatorConfig, OperatorConfigError

#: What the operator reads, all from its environment (the chart sets them).
VARIABLES = """\
environment:
  BOOKSTREAM_OPERATOR_INTERVAL       seconds between two passes of a LibraryInstance (15)
  BOOKSTREAM_OPERATOR_NAMESPACES     comma-separated namespaces to watch (empty: all)
  BOOKSTREAM_OPERATOR_PEERING        kopf peering name (empty: standalone, one replica)
  BOOKSTREAM_OPERATOR_PRIORITY       kopf peering priority (0)
  BOOKSTREAM_OPERATOR_LIVENESS       liveness endpoint (http://0.0.0.0:8080/healthz)
  BOOKSTREAM_OPERATOR_WATCH_TIMEOUT  seconds of one watch request (300)
  BOOKSTREAM_LOG_LEVEL               debug, info, warning, error (info)
  BOOKSTREAM_LOG_FORMAT              console or json (console)
  BOOKSTREAM_REDIS_TLS_CA, _CERT, _KEY  the operator's own TLS files (operator/README.md)"""


def parse_arguments(argv: list[str]) -> None:
    """Only --help and --version: a mistyped option must not start an operator (that
    watches the whole cluster of the current kube context) before saying anything."""
    parser = argparse.ArgumentParser(
        prog="bookstream-operator",
        description="Run the operator that manages LibraryInstance resources (kopf), with "
        "the Kubernetes credentials of its environment (in-cluster, else ~/.kube/config).",
        epilog=VARIABLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('bookstream-operator')}"
    )
    parser.parse_args(argv)


def main() -> None:
    parse_arguments(sys.argv[1:])
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
