"""Local runners that start service code: ``serve`` and the in-process workers of ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from bookstream_core.config import (
    ObservabilitySettings,
    RedisSettings,
    WorkerSettings,
    worker_settings_from,
)
from bookstream_core.metrics import Metrics
from bookstream_core.runner import run_workers
from bookstream_core.types import ServiceName
from bookstream_core.worker import ServiceFactory, Worker
from bookstream_lending.service import LendingService
from bookstream_shelving.service import ShelvingService


def serve(args: argparse.Namespace) -> int:
    """One lending and one shelving worker in this process, like the original main.py."""
    lending = worker_settings_from("lending", args, os.environ)
    shelving = replace(lending, service="shelving")
    if not args.name and not os.environ.get("BOOKSTREAM_WORKER_NAME"):
        shelving = worker_settings_from("shelving", args, os.environ)
    return run_workers(
        [(lending, LendingService), (shelving, ShelvingService)],
        lending.observability,
        "bookstream",
    )


@asynccontextmanager
async def local_workers(
    redis: RedisSettings, library: str, *, name: str = "local", log_level: str = "warning"
) -> AsyncIterator[Metrics]:
    """Run one worker of each service as tasks of the current event loop."""
    metrics = Metrics()
    observability = ObservabilitySettings(log_level=log_level)
    factories: list[tuple[ServiceName, ServiceFactory]] = [
        ("lending", LendingService),
        ("shelving", ShelvingService),
    ]
    workers = [
        Worker(
            WorkerSettings(
                service=service,
                name=f"{name}-{service}",
                library=library,
                force=True,
                redis=redis,
                observability=observability,
            ),
            factory,
            metrics,
        )
        for service, factory in factories
    ]
    for worker in workers:
        await worker.start()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
    try:
        yield metrics
    finally:
        stop.set()
        await asyncio.gather(*tasks)
