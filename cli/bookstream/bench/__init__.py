"""``bookstream bench``: the workload of docs/design.md §5, drained or offered at a fixed rate.

One idea per module: ``workload`` (the seeded events), ``server`` (a private Redis),
``workers`` (the worker processes), ``measure`` (memory, CPU, RSS), ``progress`` (the bar),
``drain`` and ``latency`` (the two modes), ``reference`` (redis-benchmark),
``correctness`` (audit, one outcome per request), ``report`` (table and JSON), and
``command`` (the options and the run that ties them together).
"""
