"""What a client believes comes from the library, not from whoever can write to Redis:
a forged Pub/Sub message is only a wake-up, a request id stays with its first user, and
clients submit through the door."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.conftest import VENV_BIN, RedisServer, WorkerProcess, run_cli, wait_for

INBOX = "bs:{main}:lending:inbox"
SUBMISSIONS = "bs:{main}:lending:submissions"


def _forge(r: redis.Redis, request_id: str, stop: threading.Event) -> None:
    """Publish a forged `accepted` on the request's channel until told to stop."""
    forged = json.dumps(
        {
            "request_id": request_id, "kind": "request", "status": "accepted", "user": "u1",
            "lent": ["geb"], "unavailable": [], "returned": [], "not_held": [],
            "reason": None, "books_in_hand": ["geb"], "limit": 5,
        }
    )  # fmt: skip
    while not stop.is_set():
        r.publish(f"bs:{{main}}:outcome:{request_id}", forged)
        time.sleep(0.005)


@pytest.mark.usefixtures("served")
def test_a_forged_announcement_is_not_an_outcome(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
) -> None:
    r = redis_server.client()
    assert run_cli(bookstream_env, "request", "u0", "geb", server=redis_server).returncode == 0
    stop = threading.Event()
    forger = threading.Thread(target=_forge, args=(r, "mine", stop))
    forger.start()
    try:
        # geb is lent to u0: the real outcome is a denial, whatever the forger says.
        done = run_cli(
            bookstream_env, "request", "u1", "geb", "--request-id", "mine", "--json",
            server=redis_server,
        )  # fmt: skip
    finally:
        stop.set()
        forger.join()
    assert done.returncode == 1, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert (outcome["status"], outcome["lent"]) == ("denied", [])


@pytest.mark.usefixtures("served")
def test_a_request_id_stays_with_its_first_user(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
) -> None:
    first = run_cli(
        bookstream_env, "request", "ann", "secret-book", "--request-id", "r-7", "--json",
        server=redis_server,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = run_cli(
        bookstream_env, "request", "ann", "secret-book", "--request-id", "r-7",
        server=redis_server,
    )  # fmt: skip
    assert again.returncode == 0  # the same user: the first outcome, safely
    for other in (["request", "bob", "x"], ["return", "ann", "secret-book"]):
        stolen = run_cli(
            bookstream_env, *other, "--request-id", "r-7", "--json", server=redis_server
        )
        assert stolen.returncode == 2, stolen.stdout + stolen.stderr
        assert "secret-book" not in stolen.stdout + stolen.stderr  # never shown ann's outcome
        assert "already used" in stolen.stderr and "Traceback" not in stolen.stderr


def test_a_queued_request_with_a_taken_id_is_refused(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    """Two users with one new id while Lending has recorded neither: both pass the door
    (it writes nothing but the entry), Lending applies the first and takes the second
    for a duplicate, and the second user's client, reading the first user's outcome,
    refuses it (exit 2): never shown as its own."""
    r = redis_server.client()
    # One batch at a time: "first" is then the first submitted. (With batches in flight in
    # parallel, or several workers, it is the first applied; the second user is refused
    # all the same: full run, bob's entry was applied first and ann's was the duplicate.)
    lending = start_worker("lending", redis_server, extra=["--in-flight", "1"])
    start_worker("shelving", redis_server)
    lending.process.send_signal(signal.SIGSTOP)  # still alive (its name lock), not reading
    try:
        queued = run_cli(bookstream_env, "request", "ann", "a", "--request-id", "q-1",
                         "--no-wait", server=redis_server)  # fmt: skip
        assert queued.returncode == 0, queued.stderr
        argv = [str(VENV_BIN / "bookstream"), "request", "bob", "a", "--request-id", "q-1",
                "--timeout", "30", "--redis", redis_server.url]  # fmt: skip
        bob = subprocess.Popen(argv, env=bookstream_env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
        wait_for(lambda: r.llen(SUBMISSIONS) == 2)
    finally:
        lending.process.send_signal(signal.SIGCONT)
    out, err = bob.communicate(timeout=60)
    assert bob.returncode == 2 and "another user" in err, out + err
    ann = run_cli(bookstream_env, "outcome", "q-1", "--json", server=redis_server)
    assert json.loads(ann.stdout)["user"] == "ann" and json.loads(ann.stdout)["lent"] == ["a"]
    # Once recorded, the door itself refuses the id to another user.
    again = run_cli(bookstream_env, "request", "bob", "a", "--request-id", "q-1",
                    server=redis_server)  # fmt: skip
    assert again.returncode == 2 and "another user" in again.stderr
    assert r.xinfo_stream(INBOX)["entries-added"] == 2  # (read entries are trimmed)


def test_an_admin_loads_the_functions_from_info_and_a_producer_uses_the_door(
    redis_server: RedisServer, bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    """The command `bookstream info --functions` prints for each library loads it as is
    (prelude and parts joined), and leaves no file behind; the submit recipe
    `bookstream info --json` gives works with a bare Redis client."""
    env = {**bookstream_env, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    listed = run_cli(env, "info", "--functions")
    commands = [line.split() for line in listed.stdout.splitlines() if "| redis-cli" in line]
    assert len(commands) == 3, listed.stdout
    r = redis_server.client()
    for command in commands:
        assert command[:3] == ["bookstream", "info", "--function"] and command[4] == "|"
        source = run_cli(env, *command[1:4])
        assert source.returncode == 0 and source.stdout.startswith("#!lua name="), source
        # The admin's half of the pipe, pointed at the test's Redis.
        loaded = subprocess.run(
            ["redis-cli", "-s", str(redis_server.socket), *command[6:]],
            input=source.stdout, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert loaded.stdout.strip() == command[3], loaded
    assert not any((tmp_path / "tmp").iterdir())
    unknown = run_cli(env, "info", "--function", "nope")
    assert unknown.returncode == 2 and "no functions library 'nope'" in unknown.stderr
    recipe = json.loads(run_cli(bookstream_env, "info", "--json").stdout)["producer"]["submit"]
    command = recipe.split(" '", 1)[0]  # the rest is the placeholder for the event
    event = {"v": 1, "type": "request", "id": "foreign-1", "user": "u", "books": ["a"]}
    r.execute_command(*command.split(), json.dumps(event))
    (submitted,) = r.lrange(SUBMISSIONS, 0, -1)
    assert json.loads(submitted) == event


def test_a_malformed_twin_set_aside_first_is_not_the_client_s_outcome(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    """Breaker: a malformed entry with a client's request id, set aside just before the
    client's own valid entry is applied, made the client print REJECTED while the books
    were in fact lent. The rejection names its submission (a digest of its bytes); the
    client waits for its own."""
    r = redis_server.client()
    lending = start_worker("lending", redis_server, extra=["--batch-size", "1"])
    start_worker("shelving", redis_server)
    lending.process.send_signal(signal.SIGSTOP)
    try:
        # Pushed raw, past the door, as a hostile client may (the door would refuse it).
        twin = {"v": 1, "type": "request", "id": "T1", "user": "t1", "books": ["bad\u0001"]}
        r.rpush(SUBMISSIONS, json.dumps(twin))
        client = subprocess.Popen(
            [str(VENV_BIN / "bookstream"), "request", "t1", "tw", "--request-id", "T1",
             "--json", "--timeout", "20",
             "--redis", redis_server.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bookstream_env,
        )  # fmt: skip
        wait_for(lambda: r.llen(SUBMISSIONS) == 2, timeout=10)  # the client's entry is in
    finally:
        lending.process.send_signal(signal.SIGCONT)
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, out + err
    assert json.loads(out)["status"] == "accepted"
    audit = run_cli(bookstream_env, "audit", server=redis_server)
    assert audit.returncode == 0, audit.stdout


def test_an_oversized_twin_s_rejection_is_not_the_client_s_outcome(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    """Breaker: a twin over the entry bound is cut in Redis, so its `rejected` outcome
    names no submission, and the client took a rejection naming none for its own (REJECTED,
    exit 1, while its request was then accepted). Here the twin is set aside as a worker
    does (bs1_dead_letter, no digest) while the client's own submission waits."""
    r = redis_server.client()
    lending = start_worker("lending", redis_server)
    start_worker("shelving", redis_server)
    lending.process.send_signal(signal.SIGSTOP)
    try:
        client = subprocess.Popen(
            [str(VENV_BIN / "bookstream"), "request", "t2", "tw2", "--request-id", "T2",
             "--json", "--timeout", "30", "--redis", redis_server.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bookstream_env,
        )  # fmt: skip
        wait_for(lambda: r.llen(SUBMISSIONS) == 1, timeout=10)
        twin = json.dumps({"v": 1, "type": "request", "id": "T2", "user": "x", "books": ["a"],
                           "pad": "x" * 70_000})  # fmt: skip
        entry = r.xadd(INBOX, {"e": twin})
        r.xreadgroup("lending", "ghost", {INBOX: ">"})
        row = [entry, "too_large: 70077 bytes", 1, "T2", "request", "", "", 1, 1, "e", twin[:8192]]
        r.fcall("bs1_dead_letter", 3, INBOX, "bs:{main}:lending:dead", "bs:{main}:events",
                "lending", 60, 100, "bs:{main}:outcome:", 1, *row)  # fmt: skip
        assert json.loads(r.get("bs:{main}:outcome:T2"))["submission"] is None  # type: ignore[arg-type]
        time.sleep(1.5)  # the client saw the rejection (Pub/Sub, polling) and kept waiting
        assert client.poll() is None, client.communicate()
    finally:
        lending.process.send_signal(signal.SIGCONT)
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, out + err
    assert json.loads(out)["status"] == "accepted"


def test_outcome_later_waits_past_a_malformed_twin_s_rejection(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    """Breaker round 2: after --no-wait, `bookstream outcome ID` printed a malformed
    twin's rejection although the valid request (still ahead) was then accepted."""
    r = redis_server.client()
    lending = start_worker("lending", redis_server, extra=["--batch-size", "1", "--in-flight", "1"])
    start_worker("shelving", redis_server)
    lending.process.send_signal(signal.SIGSTOP)
    try:
        twin = {"v": 1, "type": "request", "id": "tw10", "user": "x", "books": "notalist"}
        r.xadd(INBOX, {"e": json.dumps(twin)})
        for n in range(300):  # others' requests between the twin and the victim's
            other = {"v": 1, "type": "request", "id": f"o{n}", "user": f"o{n}", "books": ["y"]}
            r.xadd(INBOX, {"e": json.dumps(other)})
        queued = run_cli(
            bookstream_env, "request", "victim10", "t10book", "--request-id", "tw10",
            "--no-wait", server=redis_server,
        )  # fmt: skip
        assert queued.returncode == 0, queued.stderr
        asking = subprocess.Popen(
            [str(VENV_BIN / "bookstream"), "outcome", "tw10", "--json", "--timeout", "20",
             "--redis", redis_server.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bookstream_env,
        )  # fmt: skip
        time.sleep(1.5)  # it is waiting (subscribed) before anything is applied
    finally:
        lending.process.send_signal(signal.SIGCONT)
    out, err = asking.communicate(timeout=30)
    assert asking.returncode == 0, out + err
    assert json.loads(out)["status"] == "accepted"


def test_a_forged_reply_in_the_inbox_is_set_aside(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    """Shelving's replies travel on a stream of their own: a `fetched` written where
    clients submit is set aside (wrong_stream), and the request it names still waits for
    the real one."""
    r = redis_server.client()
    start_worker("lending", redis_server)
    sent = run_cli(bookstream_env, "request", "u1", "far", "--request-id", "waits",
                   "--no-wait", server=redis_server)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: r.hget("bs:{main}:lending:book", "far") == b"paged:waits")
    forged = {"v": 1, "type": "fetched", "id": "waits", "books": ["far"]}
    r.xadd(INBOX, {"e": json.dumps(forged)})
    wait_for(lambda: r.xlen("bs:{main}:lending:dead") == 1)
    ((_, dead),) = r.xrange("bs:{main}:lending:dead")
    assert dead[b"reason"].startswith(b"wrong_stream")
    assert r.hget("bs:{main}:lending:book", "far") == b"paged:waits"
    assert not r.exists("bs:{main}:outcome:waits")
    start_worker("shelving", redis_server)
    done = run_cli(bookstream_env, "outcome", "waits", "--json", server=redis_server)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["lent"] == ["far"]
