"""Chaos run at scale (issue 3): N mixed events from concurrent clients while a random
worker is SIGKILLed and restarted every few seconds and Redis is SIGKILLed and restarted
once, with appendfsync always. Prints the figures as JSON; exit 1 on any violation.

    .venv/bin/python benchmarks/chaos.py --events 100000 --kill-every 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis.asyncio as aioredis
from bookstream import AsyncClient, Unreachable
from bookstream.audit import audit
from bookstream_core.streams import backlog

BIN = Path(sys.executable).parent


class Redis:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "r.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
        )
        for _ in range(200):
            if self.socket.exists():
                return
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class Workers:
    def __init__(self, url: str, directory: Path) -> None:
        self.url, self.directory = url, directory
        self.procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self.serial = 0

    def start(self, service: str, name: str, force: bool = False) -> None:
        log = open(self.directory / f"{service}-{name}.log", "ab")  # noqa: SIM115
        args = [
            str(BIN / f"bookstream-{service}"),
            name,
            "--redis",
            self.url,
            "--log-level",
            "warning",
            "--claim-idle-ms",
            "2000",
        ] + (["-f"] if force else [])
        env = {**os.environ, "BOOKSTREAM_LOCK_TTL_MS": "3000"}
        self.procs[(service, name)] = subprocess.Popen(args, stdout=log, stderr=log, env=env)

    def kill_one(self, rng: random.Random, stats: Counter[str]) -> None:
        service, name = rng.choice(sorted(self.procs))
        self.procs.pop((service, name)).kill()
        stats["kills"] += 1
        if rng.random() < 0.5:
            self.start(service, name, force=True)
        else:
            self.serial += 1
            self.start(service, f"{service}-r{self.serial}")
            stats["new_names"] += 1

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=30)


async def _retry(call, *args, **kwargs):  # type: ignore[no-untyped-def]
    for _ in range(600):
        try:
            return await call(*args, **kwargs)
        except Unreachable:
            await asyncio.sleep(0.1)
    raise RuntimeError("Redis did not come back")


async def client_task(url: str, index: int, count: int, ids: list[str]) -> None:
    rng = random.Random(index)
    users = [f"user-{index}-{u}" for u in range(50)]
    asked: dict[str, list[str]] = {u: [] for u in users}
    async with AsyncClient(url) as client:
        for n in range(count):
            user, rid = rng.choice(users), f"c{index}-{n}"
            if asked[user] and rng.random() < 0.3:
                books = [asked[user].pop(rng.randrange(len(asked[user])))]
                await _retry(client.submit_return, user, books, request_id=rid)
            else:
                books = [f"book-{rng.randrange(20000)}" for _ in range(rng.randint(1, 3))]
                asked[user].extend(books)
                await _retry(client.submit_request, user, books, request_id=rid)
            ids.append(rid)
            if n % 50 == 49:
                await _retry(client.outcome, rid, timeout=60)


async def main(args: argparse.Namespace) -> int:
    directory = Path(tempfile.mkdtemp(prefix="bschaos-", dir="/tmp"))
    server = Redis(directory)
    server.start()
    url = f"unix://{server.socket}"
    workers = Workers(url, directory)
    for service, n in (("lending", 3), ("shelving", 2)):
        for i in range(n):
            workers.start(service, f"{service}-{i}")
    stats: Counter[str] = Counter()
    ids: list[str] = []
    done = asyncio.Event()
    started = time.monotonic()

    async def chaos() -> None:
        rng = random.Random(args.seed)
        while not done.is_set():
            await asyncio.sleep(args.kill_every)
            if not stats["redis_restarts"] and len(ids) > args.events // 2:
                server.kill()
                await asyncio.sleep(0.5)
                server.start()
                stats["redis_restarts"] += 1
            workers.kill_one(rng, stats)

    chaos_task = asyncio.create_task(chaos())
    per_client = args.events // args.clients
    await asyncio.gather(*(client_task(url, i, per_client, ids) for i in range(args.clients)))
    done.set()
    await chaos_task
    r = aioredis.Redis(unix_socket_path=str(server.socket))
    violations: list[str] = []
    while True:  # quiescence: everything applied, nothing pending
        busy = 0
        for service in ("lending", "shelving"):
            inbox = f"bs:{{main}}:{service}:inbox"
            for g in await r.xinfo_groups(inbox):
                busy += int(g["pending"]) + (await backlog(r, inbox, g) != 0)
        if not busy:
            break
        await asyncio.sleep(0.5)
    elapsed = time.monotonic() - started
    outcomes: Counter[str] = Counter()
    for i in range(0, len(ids), 1000):
        values = await r.mget([f"bs:{{main}}:outcome:{rid}" for rid in ids[i : i + 1000]])
        for value in values:
            outcomes["missing" if value is None else json.loads(value)["status"]] += 1
    if outcomes["missing"]:
        violations.append(f"{outcomes['missing']} requests without an outcome")
    report = await audit(r, "main")
    violations += report.violations
    await r.aclose()
    workers.stop()
    server.kill()
    figures = {
        "events": len(ids),
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "kills": stats["kills"],
        "restarts_under_new_name": stats["new_names"],
        "redis_restarts": stats["redis_restarts"],
        "outcomes": dict(outcomes),
        "outcomes_replayed": report.outcomes_replayed,
        "audit_notes": report.notes,
        "violations": len(violations),
        "violation_samples": violations[:10],
    }
    print(json.dumps(figures, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    return 1 if violations else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--kill-every", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    sys.exit(asyncio.run(main(parser.parse_args())))
