"""``bookstream-operator``: build the configuration from the environment and run kopf."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path

import kopf
from bookstream_core import settings as table
from bookstream_core.usage import error_line

from bookstream_operator.handlers import register
from bookstream_operator.settings import OperatorConfig, OperatorConfigError


def variables() -> str:
    """What the operator reads, all from its environment (the chart sets them): the rows of
    the one settings table it takes, each in its meaning to the operator."""
    rows = [s for s in table.SETTINGS if s.scope == "operator" or table.OPERATOR in s.also]
    width = max(len(s.variable) for s in rows) + 2
    lines = [f"  {s.variable.ljust(width)}{s.describe(table.OPERATOR)}" for s in rows]
    return "environment:\n" + "\n".join(lines)


def parse_arguments(argv: list[str]) -> None:
    """Only --help and --version: a mistyped option must not start an operator (that
    watches the whole cluster of the current kube context) before saying anything."""
    parser = argparse.ArgumentParser(
        prog="bookstream-operator",
        description="Run the operator that manages LibraryInstance resources (kopf), with "
        "the Kubernetes credentials of its environment (in-cluster, else ~/.kube/config).",
        epilog=variables(),
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
    if (missing := missing_credentials(os.environ)) is not None:
        print(error_line("bookstream-operator", missing), file=sys.stderr)
        raise SystemExit(2)
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


def missing_credentials(env: Mapping[str, str]) -> str | None:
    """Why the operator has no way to log in to Kubernetes, if it has none: kopf would
    retry every 60 s for ever, each time with a 45-line traceback. In a cluster, its
    service account; else a kubeconfig file (KUBECONFIG's paths, else ~/.kube/config)."""
    if env.get("KUBERNETES_SERVICE_HOST"):
        return None
    given = env.get("KUBECONFIG")
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    paths = [p for p in given.split(os.pathsep) if p] if given else [str(home / ".kube/config")]
    if any(Path(p).expanduser().is_file() for p in paths):
        return None
    where = f"KUBECONFIG={given}" if given else paths[0]
    return (
        "no Kubernetes credentials: not in a cluster (no KUBERNETES_SERVICE_HOST) and no "
        f"kubeconfig file ({where} not found)"
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
