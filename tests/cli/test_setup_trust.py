"""`bookstream setup --acl DIR` makes a file's content a Redis user's password: it uses only
files nobody else could have written, writes new ones only where nobody else can write,
and checks every file before it changes anything in Redis. Real files, a real Redis, the
real command."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from bookstream_core.roles import ROLES

from tests.conftest import RedisServer, run_cli

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="making another user's files needs root")
LIB = "trust"


def redis_state(server: RedisServer) -> tuple[object, ...]:
    r = server.client()
    return tuple(r.acl_list()), tuple(str(f) for f in r.function_list()), r.dbsize()


def setup(env: dict[str, str], server: RedisServer, folder: Path) -> tuple[int, str, str]:
    done = run_cli(env, "setup", "--library", LIB, "--acl", str(folder), server=server)
    return done.returncode, done.stdout, done.stderr


def refused(env: dict[str, str], server: RedisServer, folder: Path, message: str) -> None:
    """Exit 2, one line saying why, and Redis as it was."""
    before = redis_state(server)
    code, out, err = setup(env, server, folder)
    assert (code, out) == (2, ""), err
    assert err.startswith("bookstream: error: ") and message in err, err
    assert len(err.splitlines()) == 1
    assert redis_state(server) == before


def password_files(folder: Path, mode: int = 0o600) -> None:
    folder.mkdir(mode=0o700, exist_ok=True)
    for role in ROLES:
        (folder / role).write_text(f"known-{role}\n")
        os.chmod(folder / role, mode)


def test_a_file_others_may_write_is_refused_before_anything_changes(
    redis_server: RedisServer, bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    """A bad viewer file used to be found after the lending, shelving and client users
    were already reset: setup half done."""
    folder = tmp_path / "users"
    password_files(folder)
    (folder / "operator").unlink()  # missing: would be written
    os.chmod(folder / "viewer", 0o666)
    why = f"password file {folder / 'viewer'} is writable by group or others (mode 0666)"
    refused(bookstream_env, redis_server, folder, why)
    assert not (folder / "operator").exists()  # nothing written either
    os.chmod(folder / "viewer", 0o620)  # group-writable: refused as well
    refused(bookstream_env, redis_server, folder, "is writable by group or others (mode 0620)")


def test_new_files_go_only_into_a_directory_only_you_can_write(
    redis_server: RedisServer, bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "users"
    folder.mkdir()
    os.chmod(folder, 0o777)
    refused(bookstream_env, redis_server, folder,
            f"password directory {folder} is writable by group or others (mode 0777)")  # fmt: skip
    assert list(folder.iterdir()) == []
    os.chmod(folder, 0o755)  # yours, others may read: fine (the files are 0600)
    code, out, err = setup(bookstream_env, redis_server, folder)
    assert code == 0, err
    assert out.count("(new)") == len(ROLES)


@as_root
def test_another_users_directory_file_or_symlink_is_refused(
    redis_server: RedisServer, bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    """The breaker's case: a 0777 directory of nobody's holding a 0666 client file whose
    password nobody knows was "kept"."""
    folder = tmp_path / "users"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    os.chmod(folder, 0o777)
    (folder / "client").write_text("nobody-knows-this\n")
    os.chmod(folder / "client", 0o666)
    os.chown(folder / "client", NOBODY, NOBODY)
    refused(bookstream_env, redis_server, folder,
            f"password file {folder / 'client'} belongs to uid {NOBODY}")  # fmt: skip
    os.chmod(folder / "client", 0o600)  # not writable by others, still not yours
    refused(bookstream_env, redis_server, folder, f"belongs to uid {NOBODY}")
    (folder / "client").unlink()
    # No file at all: nothing is written into another user's directory.
    refused(bookstream_env, redis_server, folder,
            f"password directory {folder} belongs to uid {NOBODY}")  # fmt: skip
    assert list(folder.iterdir()) == []
    # A symlink planted by another user to a root-owned file whose content is known.
    ours = tmp_path / "ours"
    password_files(ours)
    (ours / "client").unlink()
    known = tmp_path / "known"
    known.write_text("public-text\n")
    os.symlink(known, ours / "client")
    os.lchown(ours / "client", NOBODY, NOBODY)
    refused(bookstream_env, redis_server, ours,
            f"{ours / 'client'} is a symlink of uid {NOBODY}")  # fmt: skip


@as_root
def test_a_kubernetes_secret_mount_is_kept(
    redis_server: RedisServer, bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    """As the kubelet lays out a Secret volume: a world-writable sticky directory whose
    entries are root's symlinks through ..data to root's read-only files."""
    mount = tmp_path / "secret"
    mount.mkdir()
    os.chmod(mount, 0o1777)
    timestamped = mount / "..2024_01_01_00_00_00.000000000"
    password_files(timestamped, mode=0o644)
    os.chmod(timestamped, 0o755)
    os.symlink(timestamped.name, mount / "..data")
    for role in ROLES:
        os.symlink(f"..data/{role}", mount / role)
    code, out, err = setup(bookstream_env, redis_server, mount)
    assert code == 0, err
    assert out.count("(kept)") == len(ROLES)
    r = redis_server.client()
    assert r.execute_command("AUTH", f"bs-{LIB}-client", "known-client") in (b"OK", True)
    assert stat.S_IMODE(mount.stat().st_mode) == 0o1777  # left as it was
