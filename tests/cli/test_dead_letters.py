"""``bookstream dead-letters``: list, show, retry (re-inject) and purge, end to end."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest
from bookstream import Client

from tests.conftest import RedisServer, WorkerProcess, run_cli

INBOX = "bs:{main}:lending:inbox"
DEAD = "bs:{main}:lending:dead"


def bookstream(
    server: RedisServer, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(env, *args, server=server)


@pytest.mark.usefixtures("served")
def test_list_show_retry_purge(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
) -> None:
    r = redis_server.client()
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
    # Set aside in either order: a quiet worker applies the entry it woke for while it
    # takes the next one.
    entries = sorted(json.loads(listed.stdout), key=lambda e: str(e["reason"]))
    assert [e["reason"].split(":")[0] for e in entries] == ["invalid_json", "too_large"]
    assert entries[1]["request_id"] == "ok-later"
    assert entries[0]["fields"] == {"e": "not json at all"}
    assert "invalid_json" in bookstream(redis_server, bookstream_env, "dead-letters", "list").stdout

    args = ("dead-letters", "show", entries[0]["id"])
    shown = bookstream(redis_server, bookstream_env, *args, "--json")
    assert json.loads(shown.stdout)["entry"] == entries[0]["entry"]
    text = bookstream(redis_server, bookstream_env, *args).stdout
    assert text.startswith(f"dead letter {entries[0]['id']} (lending): invalid_json")
    assert "e: not json at all" in text
    missing = bookstream(redis_server, bookstream_env, "dead-letters", "show", "1-1")
    assert missing.returncode == 2 and "no dead letter 1-1" in missing.stderr

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


def test_ids_with_all_or_ids_that_are_no_dead_letter_are_refused(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    """`retry 1-1 --all` retried everything; `purge 0-0` said "0 purged", exit 0."""
    r = redis_server.client()
    dead_id = r.xadd(DEAD, {"f.e": "x", "stream": INBOX, "reason": "invalid_json"}).decode()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return bookstream(redis_server, bookstream_env, "dead-letters", *args)

    for action in ("retry", "purge"):
        both = run(action, dead_id, "--all")
        assert both.returncode == 2 and "not both" in both.stderr, both
        # (A time alone is its first entry, as XDEL reads it.)
        for ids, named in ((["0-0"], "0-0"), (["0-0", "5"], "0-0, 5-0")):
            none = run(action, *ids)
            assert none.returncode == 2, none
            assert none.stderr == f"bookstream: error: no dead letter {named}\n"
        assert r.xlen(DEAD) == 1
    some = run("purge", "0-0", dead_id)
    assert some.returncode == 0 and some.stdout == "1 purged\n", some
    assert some.stderr == "bookstream: warning: no dead letter 0-0: left out\n"
    assert r.xlen(DEAD) == 0


def test_a_retried_rejection_is_applied_and_a_refused_retry_keeps_its_dead_letter(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    """A request set aside for a reason that no longer holds (too many deliveries) was
    answered `rejected`; retrying it applies it and its real outcome replaces the
    rejection. A retry Redis refuses (memory full) keeps the dead letter."""
    r = redis_server.client()
    r.xgroup_create(INBOX, "lending", id="0", mkstream=True)
    event = {"v": 1, "type": "request", "id": "twice", "user": "u", "books": ["a"]}
    r.xadd(INBOX, {"e": json.dumps(event)})
    r.xreadgroup("lending", "ghost", {INBOX: ">"})  # a first delivery, never applied
    extra = ["--max-deliveries", "1", "--claim-idle-ms", "100"]
    start_worker("lending", redis_server, extra=extra)
    start_worker("shelving", redis_server)
    deadline = time.monotonic() + 15
    while r.xlen(DEAD) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    with Client(redis_server.url) as client:
        assert client.outcome("twice", timeout=5).status == "rejected"
    ((dead_id, _),) = r.xrange(DEAD)

    r.config_set("maxmemory", "1")  # every write refused
    refused = bookstream(redis_server, bookstream_env, "dead-letters", "retry", dead_id.decode())
    r.config_set("maxmemory", "0")
    assert refused.returncode == 3 and "the dead letter is kept" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert r.xlen(DEAD) == 1

    retried = bookstream(redis_server, bookstream_env, "dead-letters", "retry", dead_id.decode())
    assert retried.returncode == 0, retried.stderr
    assert r.xlen(DEAD) == 0
    with Client(redis_server.url) as client:
        deadline = time.monotonic() + 15
        while client.outcome("twice", timeout=5).status == "rejected":
            assert time.monotonic() < deadline, "the retried request was not applied"
            time.sleep(0.1)
        outcome = client.outcome("twice", timeout=5)
    assert (outcome.status, outcome.lent) == ("accepted", ["a"])
    # The history holds the rejection and the outcome that replaced it: a clean audit.
    audit = bookstream(redis_server, bookstream_env, "audit")
    assert audit.returncode == 0, audit.stdout
