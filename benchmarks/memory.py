"""Memory under steady load (issue 3): N events offered at a fixed rate, Redis
``used_memory`` sampled every 10 s. With streams trimmed and outcomes/idempotency records
expiring after ``--retention`` seconds it must reach a plateau instead of growing with
the number of events.

    .venv/bin/python benchmarks/memory.py --events 1000000 --rate 4000 --retention 30

Writes benchmarks/results/memory-steady.json and, with matplotlib installed
(pip install 'bookstream[plot]'), benchmarks/memory.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis
from bookstream.bench.library import create_groups
from bookstream.bench.server import start_private_redis
from bookstream.bench.workers import WorkerSet
from bookstream.bench.workload import generate
from bookstream_core.events import EVENT_FIELD
from bookstream_core.keys import LibraryKeys

HERE = Path(__file__).resolve().parent
LIBRARY = "memory"
CHUNK = 100_000  # events generated at a time (the workload's state restarts per chunk)


async def run(args: argparse.Namespace) -> dict[str, object]:
    server = start_private_redis()
    keys = LibraryKeys(LIBRARY)
    workers = WorkerSet(
        server.url, LIBRARY, args.workers, extra=["--retention", str(args.retention)]
    )
    r = aioredis.Redis(unix_socket_path=str(server.socket))
    samples: list[dict[str, float]] = []
    sent = 0
    try:
        await create_groups(r, keys)
        workers.start()
        await workers.wait_ready(r)
        start = time.monotonic()

        async def sample_forever() -> None:
            while True:
                info = await r.info("memory")
                inbox = await r.xlen(keys.inbox("lending"))
                samples.append(
                    {
                        "t": round(time.monotonic() - start, 1),
                        "sent": sent,
                        "used_memory": int(info["used_memory"]),
                        "lending_inbox": int(inbox),
                    }
                )
                print(f"{samples[-1]}", file=sys.stderr)
                await asyncio.sleep(args.interval)

        sampler = asyncio.create_task(sample_forever())
        tick = 0.01
        per_tick = args.rate * tick
        chunk_no = 0
        while sent < args.events:
            events = generate(
                min(CHUNK, args.events - sent), seed=chunk_no + 1, id_prefix=f"m{chunk_no}"
            )
            chunk_no += 1
            i = 0
            while i < len(events):
                due = start + (sent + per_tick) / args.rate
                async with r.pipeline(transaction=False) as pipe:
                    batch = events[i : i + int(per_tick)]
                    for event in batch:
                        pipe.execute_command(
                            "XADD", keys.inbox("lending"), "*", EVENT_FIELD, event.payload
                        )
                    await pipe.execute()
                i += len(batch)
                sent += len(batch)
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        # Let the last events drain and the retention pass once more.
        await asyncio.sleep(args.retention + 2 * args.interval)
        sampler.cancel()
        info = await r.info("memory")
        samples.append(
            {
                "t": round(time.monotonic() - start, 1),
                "sent": sent,
                "used_memory": int(info["used_memory"]),
                "lending_inbox": int(await r.xlen(keys.inbox("lending"))),
            }
        )
    finally:
        await r.aclose()
        workers.stop()
        server.stop()
    half = [s["used_memory"] for s in samples if s["sent"] >= args.events / 2]
    first_100k = [s["used_memory"] for s in samples if s["sent"] >= 100_000]
    return {
        "events": sent,
        "rate": args.rate,
        "workers": args.workers,
        "retention_s": args.retention,
        "interval_s": args.interval,
        "samples": samples,
        "used_memory_at_100k": first_100k[0] if first_100k else None,
        "used_memory_max_second_half": max(half) if half else None,
        "used_memory_end": samples[-1]["used_memory"],
    }


def plot(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    assert isinstance(samples, list)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(
        [s["sent"] / 1000 for s in samples], [s["used_memory"] / 2**20 for s in samples], marker="."
    )
    ax.set_xlabel("events offered (thousands)")
    ax.set_ylabel("Redis used_memory (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"{result['events']:,} events at {result['rate']}/s, retention {result['retention_s']} s"
    )
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=4000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--retention", type=int, default=30)
    parser.add_argument("--interval", type=float, default=10)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    out = HERE / "results" / "memory-steady.json"
    out.write_text(json.dumps(result, indent=1))
    try:
        plot(result, HERE / "memory.png")
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
