"""Redis CPU per lending event of bs1_lending_apply alone, for comparing script variants.

Applies 40,000 request/return events (70/30, Zipf-ish books, 1,000 users; no shelving, so
paged books stay paged) in batches of 200 to a Redis on /tmp/perf/r.sock and prints the
Redis CPU (INFO cpu) per event:

    redis-server --port 0 --unixsocket /tmp/perf/r.sock --save "" --appendonly no --daemonize yes
    .venv/bin/python benchmarks/lua_cost.py [variant.lua]     # default: the shipped lending.lua
"""

import asyncio
import random
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis
from bookstream_core.config import DomainSettings, RuntimeSettings
from bookstream_core.functions import CoreFunctions, load_library
from bookstream_core.keys import LibraryKeys
from bookstream_lending.functions import SOURCE, LendingFunctions

SOCK = "/tmp/perf/r.sock"


async def main(source: str) -> None:
    r = aioredis.Redis(unix_socket_path=SOCK)
    await r.flushall()
    await CoreFunctions(r).load()
    await load_library(r, source)
    keys = LibraryKeys("p")
    fn = LendingFunctions(r, keys)
    inbox = keys.inbox("lending")
    await r.xgroup_create(inbox, "lending", id="0", mkstream=True)
    rng = random.Random(1)
    N, B = 40000, 200
    # About the §5 mix: 1,000 users, 70 % requests of 1-3 Zipf-ish books of 20,000, 30 % returns.
    events = []
    for i in range(N):
        u = f"user-{rng.randrange(1000):04d}"
        kind = "return" if i % 10 < 3 else "request"
        books = [
            f"book-{int(rng.paretovariate(1.0)) % 20000:05d}" for _ in range(rng.randint(1, 3))
        ]
        events.append((b"1-%d" % i, kind, f"r{i}", u, books))

    def cpu(info):
        return info["used_cpu_user"] + info["used_cpu_sys"]

    c0 = cpu(await r.info("cpu"))
    t0 = time.perf_counter()
    for i in range(0, N, B):
        await fn.apply(DomainSettings(), RuntimeSettings(), events[i : i + B], with_outcomes=False)
    c1 = cpu(await r.info("cpu"))
    t1 = time.perf_counter()
    print(f"redis cpu per event: {(c1 - c0) / N * 1e6:.1f} us; wall {N / (t1 - t0):.0f} ev/s")
    await r.aclose()


asyncio.run(main(Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else SOURCE))
