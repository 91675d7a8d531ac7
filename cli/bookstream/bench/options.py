"""The options of ``bookstream bench`` (imported by the CLI's parser, so kept light)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=200_000, help="N events to drain (200000)")
    p.add_argument("--workers", type=int, default=1, help="K workers of each service (1)")
    p.add_argument("--seed", type=int, default=1, help="workload seed (1)")
    p.add_argument(
        "--mode",
        choices=["drain", "latency"],
        default="drain",
        help="drain a preloaded backlog, or offer requests at --rate (drain)",
    )
    p.add_argument("--rate", type=float, default=5_000.0, help="latency mode: requests/s (5000)")
    p.add_argument("--duration", type=float, default=10.0, help="latency mode: seconds (10)")
    p.add_argument("--batch-size", type=int, help="the workers' --batch-size (their default)")
    p.add_argument("--in-flight", type=int, help="the workers' --in-flight (their default)")
    p.add_argument(
        "--retention",
        type=int,
        help="the workers' --retention in seconds (their default, 24 h); a short one lets "
        "outcomes expire during long runs (memory runs); outcomes are then counted, not read",
    )
    p.add_argument("--reference", action="store_true", help="also run redis-benchmark")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, help="also write the JSON object to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--redis",
        metavar="URL",
        help="the Redis to use (default: a private redis-server on a unix socket, "
        "persistence off); library 'bench' on it is emptied",
    )
