"""One Redis user per role (`bookstream setup --acl`): the original scenario with every
worker and command under its own user, and what each role is refused, with nothing
changed by a refusal."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from bookstream_core.events import submission_digest
from bookstream_core.keys import LibraryKeys
from bookstream_core.roles import ROLES

from tests.conftest import (
    MAX_ID,
    RedisServer,
    WorkerProcess,
    run_cli,
    wait_for,
    worker_command,
)

LIB = "acl"
KEYS = LibraryKeys(LIB)
P = KEYS.prefix


@pytest.fixture
def roles(redis_server: RedisServer, bookstream_env: dict[str, str], tmp_path: Path) -> Path:
    folder = tmp_path / "users"
    done = run_cli(bookstream_env, "setup", "--library", LIB, "--acl", str(folder),
                   server=redis_server)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder


def env_of(bookstream_env: dict[str, str], folder: Path, role: str) -> dict[str, str]:
    """A command's environment under one role's user (the password from its file)."""
    return {
        **bookstream_env,
        "BOOKSTREAM_REDIS_USER": f"bs-{LIB}-{role}",
        "BOOKSTREAM_REDIS_PASSWORD_FILE": str(folder / role),
        "BOOKSTREAM_LIBRARY": LIB,
    }


def as_role(server: RedisServer, folder: Path, role: str) -> redis.Redis:
    password = (folder / role).read_text().strip()
    return redis.Redis(unix_socket_path=str(server.socket), username=f"bs-{LIB}-{role}",
                       password=password)  # fmt: skip


@pytest.fixture
def role_client(redis_server: RedisServer, roles: Path) -> Iterator[Callable[[str], redis.Redis]]:
    opened: list[redis.Redis] = []

    def make(role: str) -> redis.Redis:
        opened.append(as_role(redis_server, roles, role))
        return opened[-1]

    yield make
    for client in opened:
        client.close()


def snapshot(server: RedisServer) -> dict[bytes, object]:
    """Every key of the library, as DUMP: compared before and after refusals."""
    r = server.client()
    return {k: r.dump(k) for k in sorted(r.scan_iter(match=f"{P}*"))}


def start_services(
    server: RedisServer,
    bookstream_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    folder: Path,
) -> list[WorkerProcess]:
    """A Lending and a Shelving worker, each under its own role's user."""
    return [
        start_worker(service, server, library=LIB, env=env_of(bookstream_env, folder, service))
        for service in ("lending", "shelving")
    ]


def assert_audit_ok(server: RedisServer, bookstream_env: dict[str, str], folder: Path) -> None:
    """The audit, run as the viewer, finds nothing wrong."""
    audit = run_cli(env_of(bookstream_env, folder, "viewer"), "audit", server=server)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_setup_writes_one_private_password_per_role_and_keeps_them(
    redis_server: RedisServer, bookstream_env: dict[str, str], roles: Path
) -> None:
    passwords = {}
    for role in ROLES:
        path = roles / role
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        passwords[role] = path.read_text()
    assert len(set(passwords.values())) == len(ROLES)
    again = run_cli(bookstream_env, "setup", "--library", LIB, "--acl", str(roles),
                    server=redis_server)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "(kept)" in again.stdout and "(new)" not in again.stdout
    assert {role: (roles / role).read_text() for role in ROLES} == passwords
    for password in passwords.values():
        assert password.strip() not in again.stdout + again.stderr
    users = set(redis_server.client().acl_users())
    assert {f"bs-{LIB}-{role}" for role in ROLES} <= {str(u) for u in users}


def test_the_scenario_runs_with_every_part_under_its_own_user(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    roles: Path,
) -> None:
    start_services(redis_server, bookstream_env, start_worker, roles)
    client = env_of(bookstream_env, roles, "client")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(client, *args, server=redis_server)

    first = cli("request", "user1", "book1", "book2", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["lent"] == ["book1", "book2"]
    taken = cli("request", "user2", "book1", "--json")
    assert taken.returncode == 1 and json.loads(taken.stdout)["reason"] == "none_available"
    back = cli("return", "user1", "book1", "--json")
    assert back.returncode == 0 and json.loads(back.stdout)["returned"] == ["book1"]
    assert cli("request", "user2", "book1").returncode == 0
    status = cli("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["totals"]["books_lent"] == 2
    viewer = env_of(bookstream_env, roles, "viewer")
    audit = run_cli(viewer, "audit", server=redis_server)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert run_cli(viewer, "status", "--borrower", "user2", server=redis_server).returncode == 0


REFUSALS: list[tuple[str, tuple[str, ...]]] = [
    # A client may submit through the door only: no append to any stream (an XADD even
    # to Lending's inbox could trim it), nothing but an append to the submissions (no
    # trimming or rewriting what others submitted), no write to a service's state, no
    # other function.
    ("client", ("XADD", f"{P}lending:inbox", "*", "e", "{}")),
    ("client", ("XADD", f"{P}lending:inbox", "MAXLEN", "0", "*", "e", "{}")),
    ("client", ("XTRIM", f"{P}lending:inbox", "MINID", "+")),
    ("client", ("LTRIM", f"{P}lending:submissions", "1", "0")),
    ("client", ("LPOP", f"{P}lending:submissions")),
    ("client", ("LSET", f"{P}lending:submissions", "0", "{}")),
    ("client", ("DEL", f"{P}lending:submissions")),
    ("client", ("LCS", f"{P}outcome:x", f"{P}outcome:x")),  # breaker: 0.8 s, 500 MB
    ("viewer", ("LCS", f"{P}lending:book", f"{P}lending:book")),
    # Breaker: a reply of any size from a small key, left unread, held Redis's memory.
    ("client", ("SRANDMEMBER", f"{P}lending:borrowers", "-8000000")),
    ("viewer", ("HRANDFIELD", f"{P}lending:book", "-2000000", "WITHVALUES")),
    ("operator", ("ZRANDMEMBER", f"{P}lending:inflight", "-2000000")),
    ("client", ("RPUSH", f"{P}lending:inbox", "{}")),
    (
        "client",
        ("FCALL", "bs1_admit", "2", f"{P}lending:submissions", f"{P}lending:inbox", "1", "1"),
    ),
    ("client", ("XADD", f"{P}lending:replies", "*", "e", "{}")),
    ("client", ("XADD", f"{P}shelving:inbox", "*", "e", "{}")),
    ("client", ("XADD", f"{P}events", "*", "e", "{}")),
    ("client", ("XADD", f"{P}lending:dead", "*", "e", "{}")),
    ("client", ("HSET", f"{P}lending:book", "book1", "storage")),
    ("client", ("SET", f"{P}outcome:forged", "{}")),
    ("client", ("PUBLISH", f"{P}outcome:forged", "{}")),
    ("client", ("HINCRBY", f"{P}shelving:off", "book1", "1")),
    (
        "client",
        (
            "FCALL",
            "bs1_lending_apply",
            "3",
            f"{P}lending:inbox",
            f"{P}shelving:inbox",
            f"{P}events",
            "lending",
            "5",
            "20",
            "60",
            "100",
            "0",
            "1",
            "1",
        ),
    ),
    (
        "client",
        (
            "FCALL",
            "bs1_dead_letter",
            "3",
            f"{P}lending:inbox",
            f"{P}lending:dead",
            f"{P}events",
            "lending",
            "60",
            "100",
            f"{P}outcome:",
            "1",
        ),
    ),
    ("client", ("FUNCTION", "FLUSH")),
    ("client", ("XGROUP", "DESTROY", f"{P}lending:inbox", "lending")),
    # Shelving may not touch Lending's state, its inbox or the outcomes.
    ("shelving", ("HSET", f"{P}lending:book", "book1", "storage")),
    ("shelving", ("XADD", f"{P}lending:inbox", "*", "e", "{}")),
    ("shelving", ("SET", f"{P}outcome:forged", "{}")),
    # It may only append to Lending's replies (breaker: SET or XGROUP SETID ... $ there
    # stalled Lending), and never write the history its dead-letter call names.
    ("shelving", ("SET", f"{P}lending:replies", "x")),
    ("shelving", ("DEL", f"{P}lending:replies")),
    ("shelving", ("XGROUP", "SETID", f"{P}lending:replies", "lending", "$")),
    ("shelving", ("XTRIM", f"{P}lending:replies", "MAXLEN", "0")),
    ("shelving", ("FCALL", "bs1_trim", "1", f"{P}lending:replies")),
    ("shelving", ("XADD", f"{P}events", "*", "e", "{}")),
    (
        "shelving",
        (
            "FCALL",
            "bs1_lending_apply",
            "3",
            f"{P}lending:replies",
            f"{P}shelving:inbox",
            f"{P}events",
            "lending",
            "5",
            "20",
            "60",
            "100",
            "0",
            "1",
            "1",
        ),
    ),
    # Lending may not write Shelving's state or forge Shelving's replies... to itself.
    ("lending", ("HINCRBY", f"{P}shelving:off", "book1", "1")),
    # ...and may only append to Shelving's inbox (breaker: SET over it stalled Shelving).
    ("lending", ("SET", f"{P}shelving:inbox", "x")),
    ("lending", ("DEL", f"{P}shelving:inbox")),
    ("lending", ("XGROUP", "SETID", f"{P}shelving:inbox", "shelving", "$")),
    ("lending", ("XTRIM", f"{P}shelving:inbox", "MAXLEN", "0")),
    ("lending", ("XSETID", f"{P}shelving:inbox", MAX_ID)),
    ("lending", ("FCALL", "bs1_trim", "1", f"{P}shelving:inbox")),
    ("lending", ("FUNCTION", "DELETE", "bookstream_core_v1")),
    ("lending", ("ACL", "SETUSER", "evil", "on", "nopass", "+@all", "~*")),
    # ...and nothing else on the inbox (breaker: SET over the inbox dropped every queued
    # submission), no pattern subscription to every outcome, no history of them.
    ("client", ("SET", f"{P}lending:inbox", "x")),
    ("client", ("DEL", f"{P}lending:inbox")),
    ("client", ("XGROUP", "SETID", f"{P}lending:inbox", "lending", "$")),
    ("client", ("SET", f"{P}lending:owner:r1", "request:mallory")),
    ("client", ("XRANGE", f"{P}events", "-", "+")),
    ("client", ("PSUBSCRIBE", f"{P}outcome:*")),
    # A viewer writes nothing.
    ("viewer", ("SET", f"{P}lending:book", "x")),
    ("viewer", ("XADD", f"{P}lending:inbox", "*", "e", "{}")),
    (
        "viewer",
        (
            "FCALL",
            "bs1_submit",
            "1",
            f"{P}lending:inbox",
            '{"v":1,"type":"request","id":"v1","user":"u","books":["b"]}',
        ),
    ),
    ("viewer", ("FLUSHALL",)),
    ("viewer", ("KEYS", "*")),
    # The operator: no state, no outcome, no submission.
    ("operator", ("HSET", f"{P}lending:book", "book1", "storage")),
    ("operator", ("XADD", f"{P}lending:inbox", "*", "e", "{}")),
    ("operator", ("CONFIG", "GET", "requirepass")),
    # ...no script of its own (breaker: EVAL "while true do end" froze the shared Redis,
    # every library, unkillable once it had written), no function loaded or removed, no
    # function but its own two, and its writes only on the keys they need (breaker: SET
    # over an inbox dropped every queued submission).
    ("operator", ("EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", f"{P}operator:claim")),
    ("operator", ("EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0")),
    ("operator", ("SCRIPT", "LOAD", "return 1")),
    ("operator", ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', tostring)")),
    ("operator", ("FUNCTION", "DELETE", "bookstream_core_v1")),
    ("operator", ("FUNCTION", "FLUSH")),
    ("operator", ("FCALL", "bs1_trim", "1", f"{P}lending:inbox")),
    ("operator", ("FCALL", "bs1_compare_and_set", "1", f"{P}lending:inbox", "", "x")),
    ("operator", ("SET", f"{P}lending:inbox", "x")),
    ("operator", ("SET", f"{P}shelving:inbox", "x")),
    ("operator", ("DEL", f"{P}lending:inbox")),
    ("operator", ("XGROUP", "SETID", f"{P}lending:inbox", "lending", "$")),
    ("operator", ("XGROUP", "DELCONSUMER", f"{P}lending:replies", "lending", "w1")),
    ("operator", ("XCLAIM", f"{P}lending:replies", "lending", "w1", "0", "0-1")),
    ("operator", ("SET", f"{P}lending:book", "x")),
]


@pytest.mark.parametrize(("role", "command"), REFUSALS, ids=lambda v: str(v)[:40])
def test_each_role_is_refused_what_it_may_not_do(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    roles: Path,
    role_client: Callable[[str], redis.Redis],
    role: str,
    command: tuple[str, ...],
) -> None:
    client = env_of(bookstream_env, roles, "client")
    workers = start_services(redis_server, bookstream_env, start_worker, roles)
    assert run_cli(client, "request", "user1", "book1", server=redis_server).returncode == 0
    # Stopped: a running worker's reads change its consumers' seen-times (in the DUMP).
    for worker in workers:
        assert worker.terminate() == 0
    before = snapshot(redis_server)
    with pytest.raises(redis.ResponseError, match=r"NOPERM|no permissions"):
        role_client(role).execute_command(*command)
    assert snapshot(redis_server) == before
    assert_audit_ok(redis_server, bookstream_env, roles)


@pytest.mark.parametrize(
    ("writer", "stream"), [("lending", "shelving:inbox"), ("shelving", "lending:replies")]
)
def test_a_stream_its_writer_pushed_ahead_is_mended_by_its_reader(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    roles: Path,
    role_client: Callable[[str], redis.Redis],
    writer: str,
    stream: str,
) -> None:
    """What a service's XADD on the other's stream can still do (ACLs do not see
    arguments): push its ids to the end and trim it (MAXLEN 0). The writer may not repair
    that (no XSETID there): its sends are refused and retried until the reader's
    housekeeping (bs1_trim) mends its own stream, and the library goes on."""
    start_services(redis_server, bookstream_env, start_worker, roles)
    key = f"{P}{stream}"
    role_client(writer).execute_command("XADD", key, "MAXLEN", "0", MAX_ID, "e", "junk")
    client = env_of(bookstream_env, roles, "client")
    done = run_cli(client, "request", "user1", "book1", "--json", server=redis_server)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["lent"] == ["book1"]
    assert redis_server.client().xinfo_stream(key)["last-generated-id"] != MAX_ID.encode()


def test_a_client_s_raw_pushes_are_admitted_and_judged_by_lending(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    roles: Path,
    role_client: Callable[[str], redis.Redis],
) -> None:
    """All a client may write past the door is an RPUSH to the submissions: Lending
    admits what it pushed, sets the junk aside (answering a named id `rejected`), applies
    the valid, and nothing a client did reaches a stream but through Lending."""
    start_services(redis_server, bookstream_env, start_worker, roles)
    client = role_client("client")
    valid = {"v": 1, "type": "request", "id": "raw-ok", "user": "u1", "books": ["b1"]}
    junk = {"v": 1, "type": "request", "id": "raw-bad", "user": "u1", "books": "b1"}
    # What the door refuses, pushed past it: the workers' reading is final (a key written
    # twice reads as its last value; a field they do not know is refused, as by the door).
    twice = '{"type":"request","v":1,"id":"raw-twice","user":"m","books":["b2"],"user":"n"}'
    extra = '{"v":1,"type":"request","id":"raw-extra","user":"u2","books":["b3"],"zz":1}'
    pushed = ["not json", json.dumps(junk), twice, extra, json.dumps(valid)]
    client.rpush(KEYS.submissions, *pushed)
    assert client.publish(KEYS.doorbell, "forged ring") >= 1  # it only wakes Lending
    r = redis_server.client()
    ids = ("raw-ok", "raw-bad", "raw-twice", "raw-extra")
    wait_for(lambda: all(r.exists(KEYS.outcome(rid)) for rid in ids))
    outcomes = {rid: json.loads(r.get(KEYS.outcome(rid))) for rid in ids}  # type: ignore[arg-type]
    assert {rid: o["status"] for rid, o in outcomes.items()} == {
        "raw-ok": "accepted", "raw-bad": "rejected", "raw-twice": "accepted",
        "raw-extra": "rejected",
    }  # fmt: skip
    assert outcomes["raw-twice"]["user"] == "n"
    # Each rejection names its own submission, so its pusher knows it for its own.
    assert outcomes["raw-extra"]["submission"] == submission_digest(extra.encode())
    wait_for(lambda: r.xlen(KEYS.dead_letters("lending")) == 3)
    assert r.llen(KEYS.submissions) == 0
    assert r.acl_log() == []
    assert_audit_ok(redis_server, bookstream_env, roles)


def test_shelving_sets_aside_a_malformed_entry_under_its_role(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    roles: Path,
    role_client: Callable[[str], redis.Redis],
) -> None:
    """Breaker: Shelving's dead-letter call names the events stream (with its inbox, its
    dead letters and Lending's replies), which its role did not cover: FCALL was refused
    and a malformed entry stayed pending, retried forever."""
    start_services(redis_server, bookstream_env, start_worker, roles)
    inbox = KEYS.inbox("shelving")
    role_client("lending").xadd(inbox, {"e": "not json"})
    r = redis_server.client()
    wait_for(lambda: r.xlen(KEYS.dead_letters("shelving")) == 1, timeout=30)
    wait_for(lambda: r.xpending(inbox, "shelving")["pending"] == 0)
    assert r.acl_log() == []


def test_acl_prints_the_rules_setup_applies(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
    roles: Path,
    tmp_path: Path,
) -> None:
    """`bookstream acl` as an aclfile gives another Redis the same users, passwords
    included (as hashes: the password files are never printed)."""
    printed = run_cli(bookstream_env, "acl", "--library", LIB, "--password-dir", str(roles))
    assert printed.returncode == 0, printed.stderr
    for role in ROLES:
        assert (roles / role).read_text().strip() not in printed.stdout
    aclfile = tmp_path / "users.acl"
    # Loaded as printed (breaker: a comment line made Redis refuse the whole file).
    aclfile.write_text(printed.stdout)
    sock = tmp_path / "other.sock"
    other = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "",
         "--aclfile", str(aclfile)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(sock.exists)
        source = redis_server.client()
        with redis.Redis(unix_socket_path=str(sock)) as target:
            wait_for(lambda: bool(_ping(target)))
            for role in ROLES:
                user = f"bs-{LIB}-{role}"
                copied, made = _user(target, user), _user(source, user)
                assert copied == made
            password = (roles / "client").read_text().strip()
            with redis.Redis(unix_socket_path=str(sock), username=f"bs-{LIB}-client",
                             password=password) as client:  # fmt: skip
                assert client.ping()
    finally:
        other.kill()
        other.wait()


def test_setup_says_which_bounds_the_shared_redis_lacks(
    redis_server: RedisServer, bookstream_env: dict[str, str], roles: Path
) -> None:
    """Breakers: with Redis's defaults one client push (or doorbell ring) of 100 MB was
    copied to every Lending worker, and unread replies held Redis's memory."""
    again = run_cli(bookstream_env, "setup", "--library", LIB, "--acl", str(roles),
                    server=redis_server)  # fmt: skip
    assert "hint: proto-max-bulk-len is 536870912 bytes" in again.stdout
    assert "hint: client-output-buffer-limit has no bound" in again.stdout
    r = redis_server.client()
    r.config_set("proto-max-bulk-len", "1mb")
    r.config_set("client-output-buffer-limit", "normal 64mb 32mb 60")
    bounded = run_cli(bookstream_env, "setup", "--library", LIB, "--acl", str(roles),
                      server=redis_server)  # fmt: skip
    assert bounded.returncode == 0 and "hint:" not in bounded.stdout, bounded.stdout


def test_acl_refuses_a_password_folder_that_is_not_there(
    bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    """Newcomer: a mistyped --password-dir printed users without passwords, exit 0."""
    printed = run_cli(bookstream_env, "acl", "--library", LIB,
                      "--password-dir", str(tmp_path / "nope"))  # fmt: skip
    assert printed.returncode == 2 and "not a folder" in printed.stderr
    assert printed.stdout == ""


def _user(r: redis.Redis, name: str) -> dict[str, object]:
    """ACL GETUSER with each rule list as a set (Redis may order the rules either way)."""
    user = dict(r.acl_getuser(name))
    user["commands"] = set(user["commands"])
    user["selectors"] = [
        {k: set(str(v).split()) for k, v in zip(sel[::2], sel[1::2], strict=True)}
        for sel in user.get("selectors", [])
    ]
    return user


def _ping(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.ConnectionError:
        return False


def test_a_worker_without_its_functions_loaded_says_to_run_setup(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
    roles: Path,
) -> None:
    """A role may not load functions: a Redis that lost them (restarted empty) or holds
    another version is reported, never worked against."""
    redis_server.client().function_flush()
    env = env_of(bookstream_env, roles, "lending")
    done = subprocess.run(
        [worker_command("lending"), "w1", "--redis", redis_server.url],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "bookstream setup" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_refused_dead_letter_retry_changes_nothing(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    roles: Path,
) -> None:
    """Breaker: a client's `dead-letters retry` re-injected the entry, then was refused
    the XDEL: one more copy at each try. Now one function does both or neither."""
    worker = start_worker("lending", redis_server, library=LIB,
                          env=env_of(bookstream_env, roles, "lending"))  # fmt: skip
    r = redis_server.client()
    r.xadd(f"{P}lending:inbox", {"e": "not json"})
    wait_for(lambda: r.xlen(f"{P}lending:dead") == 1)
    worker.terminate()
    added = r.xinfo_stream(f"{P}lending:inbox")["entries-added"]
    refused = run_cli(env_of(bookstream_env, roles, "client"), "dead-letters", "retry", "--all",
                      server=redis_server)  # fmt: skip
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert r.xlen(f"{P}lending:dead") == 1
    assert r.xinfo_stream(f"{P}lending:inbox")["entries-added"] == added
    allowed = run_cli(env_of(bookstream_env, roles, "lending"), "dead-letters", "retry", "--all",
                      "--service", "lending", server=redis_server)  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert r.xlen(f"{P}lending:dead") == 0
    assert r.xinfo_stream(f"{P}lending:inbox")["entries-added"] == added + 1
