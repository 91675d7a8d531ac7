"""The original README's scenario, end to end through the CLI, with separate lending and
shelving worker processes on a real Redis."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from tests.conftest import RedisServer, WorkerProcess, run_cli


def bookstream(
    server: RedisServer, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(env, *args, server=server)


def test_original_scenario_through_the_cli(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    start_worker("lending", redis_server, name="worker1")
    start_worker("shelving", redis_server, name="worker1")

    first = bookstream(
        redis_server,
        bookstream_env,
        "request",
        "user1",
        "alice-in-wonderland",
        "geb",
        "invisible-cities",
        "--json",
    )
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["status"] == "accepted"
    assert sorted(out["lent"]) == ["alice-in-wonderland", "geb", "invisible-cities"]

    second = bookstream(
        redis_server, bookstream_env, "return", "user1", "invisible-cities", "--json"
    )
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout)
    assert out["status"] == "processed"
    assert out["returned"] == ["invisible-cities"]
    assert out["books_in_hand"] == ["alice-in-wonderland", "geb"]

    third = bookstream(
        redis_server, bookstream_env, "request", "user2", "geb", "invisible-cities", "selfish-gene"
    )
    assert third.returncode == 0, third.stderr
    assert "ACCEPTED" in third.stdout
    assert "lent:         'invisible-cities', 'selfish-gene'" in third.stdout
    assert "unavailable:  'geb' (lent to another user)" in third.stdout

    where = bookstream(redis_server, bookstream_env, "status", "--book", "geb")
    assert where.stdout.strip() == "'geb': lent to 'user1'"
    held = bookstream(redis_server, bookstream_env, "status", "--borrower", "user2", "--json")
    assert json.loads(held.stdout) == {
        "user": "user2",
        "books": ["invisible-cities", "selfish-gene"],
    }

    status = json.loads(bookstream(redis_server, bookstream_env, "status", "--json").stdout)
    assert status["totals"] == {
        "books_lent": 4,
        "borrowers": 2,
        "in_storage": 0,  # invisible-cities went back into storage, then to user2
        "reserved_for_requests": 0,
        "being_fetched": 0,
        "off_shelf": 4,
    }
    lending = status["streams"]["lending"]
    assert lending["stream"] == "bs:{main}:lending:inbox"
    (group,) = lending["groups"]
    assert (group["name"], group["pending"], group["backlog"]) == ("lending", 0, 0)
    assert [(c["name"], c["pending"], c["alive"]) for c in group["consumers"]] == [
        ("worker1", 0, True)
    ]
    text = bookstream(redis_server, bookstream_env, "status").stdout
    assert "books lent 4 to 2 users; 0 in the automated storage" in text
    assert "worker1: pending 0" in text

    audit = bookstream(redis_server, bookstream_env, "audit")
    assert audit.returncode == 0, audit.stdout
    assert "OK" in audit.stdout
