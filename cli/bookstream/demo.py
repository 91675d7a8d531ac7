"""``bookstream demo``: the original sample's scenario, end to end, on the embedded Redis.

It uses its own library namespace (``demo``), emptied first, so every run starts from
an empty library and no other library's data is touched.
"""

from __future__ import annotations

import asyncio

from bookstream_core.config import RedisSettings
from bookstream_core.connection import UNREACHABLE, connect
from bookstream_core.embedded import EmbeddedRedis
from bookstream_core.keys import LibraryKeys
from bookstream_core.logging import configure_logging
from bookstream_core.tls import diagnose

from bookstream.audit import audit
from bookstream.client import AsyncClient
from bookstream.errors import Unreachable
from bookstream.render import render_audit, render_outcome
from bookstream.submissions import KINDS

LIBRARY = "demo"
TIMEOUT = 15.0  # seconds any one Redis call of the demo may take
SCENARIO: list[tuple[str, str, list[str]]] = [
    ("request", "user1", ["alice-in-wonderland", "geb", "invisible-cities"]),
    ("return", "user1", ["invisible-cities"]),
    ("request", "user2", ["geb", "invisible-cities", "selfish-gene"]),
]


def run_demo(settings: RedisSettings) -> int:
    configure_logging("console", "warning")
    embedded = EmbeddedRedis(settings.home, settings.appendfsync)
    started_here = settings.url is None and not embedded.running()
    try:
        return asyncio.run(_demo(settings))
    finally:
        if started_here:
            embedded.stop()


async def _demo(settings: RedisSettings) -> int:
    from bookstream.local import local_workers

    r = connect(settings, timeout=TIMEOUT)
    keys = LibraryKeys(LIBRARY)
    try:
        stale = [key async for key in r.scan_iter(match=keys.all_keys_pattern, count=1000)]
        if stale:
            await r.unlink(*stale)
    except UNREACHABLE as exc:
        # Before any worker starts: a Redis that is down or silent ends the demo here.
        await r.aclose()
        raise Unreachable(
            diagnose(exc, settings) or f"cannot reach Redis at {settings.describe()}: {exc}"
        ) from None
    print(f"bookstream demo on {settings.describe()} (library {LIBRARY!r}, emptied)\n")
    failures = 0
    async with (
        local_workers(settings, LIBRARY, name="demo"),
        AsyncClient(library=LIBRARY, settings=settings) as client,
    ):
        for kind, user, books in SCENARIO:
            print(f"$ bookstream {kind} --library {LIBRARY} {user} {' '.join(books)}")
            outcome = await KINDS[kind].wait(client, user, books, timeout=TIMEOUT)
            print(render_outcome(outcome) + "\n")
            failures += not outcome.ok
    report = await audit(r, LIBRARY)
    await r.aclose()
    print(f"$ bookstream audit --library {LIBRARY}")
    print(render_audit(report))
    return 0 if report.ok and failures == 0 else 1
