"""``bookstream-operator``: build the configuration from the environment and run kopf."""

from __future__ import annotations

import os
import sys

import kopf

from bookstream_operator.handlers import register
from bookstream_operator.settings import OperatorConfig, OperatorConfigError


def main() -> None:
    try:
        config = OperatorConfig.from_env(os.environ)
    except OperatorConfigError as exc:
        print(f"bookstream-operator: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    registry = kopf.OperatorRegistry()
    register(registry, config)
    kopf.configure(verbose=False)
    kopf.run(
        registry=registry,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=not config.peering,
        peering_name=config.peering or None,
        priority=config.priority,
        liveness_endpoint=config.liveness,
    )


if __name__ == "__main__":
    main()
