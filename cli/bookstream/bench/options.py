"""The options of ``bookstream bench`` (imported by the CLI's parser, so kept light).

The workers' settings it passes on (``--batch-size``, ``--in-flight``, ``--retention``)
are rows of the one settings table: the same option, variable, help and README row as
a worker's. The rest are bench-only arguments, deliberately outside the table:

- the run's parameters (``--events``, ``--workers``, ``--mode``...) describe one run and
  are recorded in its result; a variable would change a run nobody can read off its
  command line.
- ``--redis`` empties library ``bench`` on the Redis it names, so only an explicit option
  names one (never ``BOOKSTREAM_REDIS_URL`` nor the embedded Redis, as for the demo); its
  default is a throwaway private server, which no setting means.

How to reach a Redis named by ``--redis`` (``--user``, ``--password-file``, TLS...) are the
table's connection rows, options or variables as for every other command; the workers get
them as variables, never as arguments (``workers.py``). The private server needs none: its
variables are then ignored and its options refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bookstream_core import settings as table

#: The workers' settings a run passes to every worker it starts.
WORKER_SETTINGS = ("batch_size", "in_flight", "retention")
#: How to reach the Redis --redis names: the connection rows of every other command.
CONNECTION = ("db", "redis_user", "password", "password_file", "ssl", "tls_ca", "tls_cert",
              "tls_key")  # fmt: skip


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
    connection = p.add_argument_group(
        "how to reach the Redis --redis names",
        "as for every other command; passed to the workers as variables, never as arguments",
    )
    table.add_options(connection, [table.BY_KEY[key] for key in CONNECTION], "bench")
    workers = p.add_argument_group(
        "the workers' settings",
        "passed to every worker the run starts; a short --retention lets outcomes expire "
        "during long (memory) runs: they are then counted, not read",
    )
    table.add_options(workers, [table.BY_KEY[key] for key in WORKER_SETTINGS], "bench")
