"""``bookstream dead-letters``: list, show, retry (re-inject) and purge, end to end."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

from bookstream import Client

from tests.conftest import RedisServer, WorkerProcess, run_cli

INBOX = "bs:{main}:lending:inbox"
DEAD = "bs:{main}:lending:dead"


def bookstream(
    server: RedisServer, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(env, *args, server=server)


def test_list_show_retry_purge(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    r = redis_server.client()
    start_worker("lending", redis_server)
    start_worker("shelving", redis_server)
    # Valid JSON but the wrong schema version: rejected now, fine to retry once fixed by hand;
    # here we retry an entry that becomes valid because the worker limit allows it.
    r.xadd(INBOX, {"e": "not json at all"})
    r.xadd(
        INBOX,
        {
            "e": json.dumps(
                {
                    "v": 1,
                    "type": "request",
                    "id": "ok-later",
                    "user": "u",
                    "books": ["a"],
                    "extra": "x" * 70_000,
                }
            )
        },
    )
    deadline = time.monotonic() + 10
    while r.xlen(DEAD) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)

    listed = bookstream(redis_server, bookstream_env, "dead-letters", "list", "--json")
    entries = json.loads(listed.stdout)
    assert [e["reason"].split(":")[0] for e in entries] == ["invalid_json", "too_large"]
    assert entries[1]["request_id"] == "ok-later"
    assert entries[0]["fields"] == {"e": "not json at all"}
    assert "invalid_json" in bookstream(redis_server, bookstream_env, "dead-letters", "list").stdout

    shown = bookstream(redis_server, bookstream_env, "dead-letters", "show", entries[0]["id"])
    assert json.loads(shown.stdout)["entry"] == entries[0]["entry"]

    # Re-inject the first: it fails again (still not JSON) and comes back as a new dead letter.
    retried = bookstream(redis_server, bookstream_env, "dead-letters", "retry", entries[0]["id"])
    assert retried.returncode == 0 and "1 re-injected" in retried.stdout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ids = [
            e["id"]
            for e in json.loads(
                bookstream(redis_server, bookstream_env, "dead-letters", "list", "--json").stdout
            )
        ]
        if len(ids) == 2 and entries[0]["id"] not in ids:
            break
        time.sleep(0.1)
    assert len(ids) == 2 and entries[0]["id"] not in ids

    purged = bookstream(redis_server, bookstream_env, "dead-letters", "purge", "--all")
    assert purged.stdout.strip() == "2 purged"
    assert r.xlen(DEAD) == 0
    with Client(redis_server.url) as client:
        assert client.outcome("ok-later", timeout=2).status == "rejected"


def test_retry_and_purge_need_ids_or_all(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    result = bookstream(redis_server, bookstream_env, "dead-letters", "retry")
    assert result.returncode == 2
    assert "name entry ids or give --all" in result.stderr
