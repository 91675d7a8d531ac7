"""Process entry points: parse options once, build settings, run workers until a signal.

SIGINT/SIGTERM stop gracefully (the batches in flight are finished, names are released);
a second signal stops at once: the process exits without waiting for Redis, what it had
read stays pending in its name (re-read at its next start, or claimed by another worker)
and its name lock expires with its TTL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import textwrap
from collections.abc import Sequence

from redis.exceptions import ResponseError

from bookstream_core.config import (
    ConfigError,
    ObservabilitySettings,
    WorkerSettings,
    add_worker_arguments,
    worker_settings_from,
)
from bookstream_core.connection import UNREACHABLE
from bookstream_core.consumer import sleep_or_stop
from bookstream_core.embedded import EmbeddedRedisError
from bookstream_core.functions import FunctionsUnavailable
from bookstream_core.health import HealthServer
from bookstream_core.logging import configure_logging, get_logger
from bookstream_core.metrics import Metrics
from bookstream_core.redis_config import UnsafeRedis
from bookstream_core.tls import diagnose
from bookstream_core.trouble import trouble
from bookstream_core.types import ServiceName
from bookstream_core.usage import OneLineParser, error_line
from bookstream_core.worker import NameTaken, ServiceFactory, Worker

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FORCED = 0, 1, 2, 130
#: What a worker program returns (serve's too, but its 2), ending its --help.
EXITS = {
    EXIT_OK: "stopped by a signal (Ctrl-C, SIGTERM), the batches in flight finished",
    EXIT_FAILED: "a worker failed or could not start; its line says why (its name taken, a "
    "Redis that evicts, housekeeping failing past BOOKSTREAM_GIVE_UP_S, the embedded Redis, "
    "the metrics port)",
    EXIT_USAGE: "bad input: an unknown option, a bad value of an option or a variable "
    "(BOOKSTREAM_HOME included)",
    EXIT_FORCED: "a second signal: stopped at once",
}


def exit_codes(codes: dict[int, str]) -> str:
    """An ``exit codes:`` section of a --help, one code a line (wrapped under itself)."""
    lines = ["exit codes:"]
    for code, meaning in sorted(codes.items()):
        lines.append(textwrap.fill(meaning, 79, initial_indent=f"  {code:<4}",
                                   subsequent_indent=" " * 6))  # fmt: skip
    return "\n".join(lines)


def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def service_main(
    service: ServiceName,
    factory: ServiceFactory,
    description: str,
    argv: Sequence[str] | None = None,
) -> int:
    program = f"bookstream-{service}"
    parser = OneLineParser(
        prog=program,
        description=textwrap.fill(description, 79),
        epilog=exit_codes(EXITS),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the epilog's lines kept
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version(service)}")
    add_worker_arguments(parser, (service,), program)
    args = parser.parse_args(argv)
    try:
        settings = worker_settings_from(service, args, os.environ)
    except ConfigError as exc:
        print(error_line(program, exc), file=sys.stderr)
        return EXIT_USAGE
    return run_workers([(settings, factory)], settings.observability, program)


def _version(service: ServiceName) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(f"bookstream-{service}")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def run_workers(
    specs: Sequence[tuple[WorkerSettings, ServiceFactory]],
    observability: ObservabilitySettings,
    program: str,
) -> int:
    """Run the workers until a signal; ``program`` names the command in error lines."""
    configure_logging(observability.log_format, observability.log_level)
    install_uvloop()
    try:
        return asyncio.run(_run(specs, observability, program))
    except KeyboardInterrupt:
        return EXIT_FORCED


async def _start(worker: Worker, stop: asyncio.Event) -> bool:
    """Start, waiting for Redis if it is not up yet (a pod may start before it)."""
    delay = 0.2
    warned = False
    while not stop.is_set():
        try:
            await worker.start()
            return True
        except (*UNREACHABLE, ResponseError) as exc:
            # Redis out of memory, loading, a replica...: wait like for an absent Redis.
            if isinstance(exc, ResponseError) and trouble(exc) is None:
                raise
            if not warned:
                # A thread: asking the server why may take a second (tls.diagnose).
                why = await asyncio.to_thread(diagnose, exc, worker.settings.redis)
                error = why or worker.why_unreachable(exc)
                worker.log.warning("redis unavailable at start, retrying", error=error)
                warned = True
            delay = min(delay * 2, 5.0)
            await sleep_or_stop(stop, delay * random.uniform(0.5, 1.0))
    return False


async def _run(
    specs: Sequence[tuple[WorkerSettings, ServiceFactory]],
    observability: ObservabilitySettings,
    program: str,
) -> int:
    log = get_logger()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info(
                "stopping: finishing the batches in flight (signal again to force)",
                signal=signal.Signals(signum).name,
            )
            stop.set()
        else:
            # A graceful stop waits for Redis (the batches in flight, the name release);
            # the second signal is for when that takes too long, so nothing is awaited.
            log.warning("forced stop: entries in flight stay pending, to be re-read or claimed")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_FORCED)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    metrics = Metrics()
    try:
        workers = [Worker(settings, factory, metrics) for settings, factory in specs]
    except EmbeddedRedisError as exc:
        print(error_line(program, exc), file=sys.stderr)
        # A BOOKSTREAM_HOME that is no directory of the user's is a bad setting (exit 2).
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
    health: HealthServer | None = None
    if observability.metrics_port is not None:
        health = HealthServer(
            metrics.registry,
            lambda: all(w.ready for w in workers),
            observability.metrics_host,
            observability.metrics_port,
        )
        try:
            await health.start()
        except OSError as exc:  # an unknown host, an address not on this machine, a port in use
            where = f"{observability.metrics_host}:{observability.metrics_port}"
            reason = exc.strerror or exc
            print(
                error_line(program, f"cannot serve metrics on {where}: {reason}"), file=sys.stderr
            )
            return EXIT_FAILED
    try:
        for worker in workers:
            if not await _start(worker, stop):
                return EXIT_OK
        await asyncio.gather(*(worker.run(stop) for worker in workers))
        failures = [worker.failure for worker in workers if worker.failure]
        for failure in failures:
            print(error_line(program, failure), file=sys.stderr)
        return EXIT_FAILED if failures else EXIT_OK
    except (NameTaken, FunctionsUnavailable, UnsafeRedis) as exc:
        print(error_line(program, exc), file=sys.stderr)
        return EXIT_FAILED
    finally:
        if health is not None:
            await health.stop()
