"""``bookstream setup`` and ``bookstream acl``: prepare a library with an admin connection.

Setup loads the functions libraries, creates every stream and group, and with ``--acl DIR``
one Redis ACL user per role (bookstream_core.roles) whose password is the file
``DIR/<role>``: an existing file's password is kept (a mounted Secret works read-only),
a missing one is generated and written with mode 0600. A file's content becomes a user's
password, so only files nobody else could have written are used, and new ones are written
only into a directory nobody else can write in (``bookstream_core.passwords``); every file
is read and checked before Redis is touched, so a refusal changes nothing there. Run it
again after an upgrade (new functions) or a password change (the users get the files'
passwords).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from bookstream_core.config import ConfigError
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_core.passwords import open_private_directory, read_owned_password_file
from bookstream_core.roles import ROLES, Role, acl_file_line, setuser_arguments, user_name
from bookstream_core.types import text
from redis.exceptions import ResponseError

from bookstream.commands import function_sources


@dataclass
class SetupReport:
    library: str
    functions: list[str] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    #: role -> (user name, password file, "kept" or "new")
    users: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    acl_saved: bool = False
    #: What the Redis the roles share should bound and does not (redis_advice).
    advice: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"library {self.library}: functions {', '.join(self.functions)} loaded"]
        out.append(f"  streams and groups ready: {', '.join(self.streams)}")
        for role, (user, path, how) in self.users.items():
            out.append(f"  role {role}: user {user}, password in {path} ({how})")
        if self.users:
            out.append(
                "  users saved to Redis's ACL file"
                if self.acl_saved
                else "  Redis has no ACL file: run setup again after Redis restarts empty"
            )
        out += [f"  hint: {line}" for line in self.advice]
        return out


def role_passwords(folder: Path) -> dict[Role, tuple[str, str]]:
    """Each role's password and whether it was "kept" from ``folder/role`` or is "new"
    (generated and written there, 0600): the existing files first, all of them, so that
    a refused one leaves no file written either."""
    found: dict[Role, tuple[str, str]] = {}
    missing: list[Role] = []
    for role in ROLES:
        path = folder / role
        if os.path.lexists(path):  # (a dangling symlink is refused, not replaced)
            found[role] = read_owned_password_file(str(path)), "kept"
        else:
            missing.append(role)
    if missing:
        directory = open_private_directory(folder)
        try:
            for role in missing:
                found[role] = _write_password(directory, folder / role), "new"
        finally:
            os.close(directory)
    return {role: found[role] for role in ROLES}


def _write_password(directory: int, path: Path) -> str:
    password = secrets.token_urlsafe(32)
    try:
        # O_EXCL: never write through a file (or a link) someone put there meanwhile.
        fd = os.open(path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=directory)
    except OSError as exc:
        raise ConfigError(f"cannot write password file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(password + "\n")
    return password


async def setup_library(r: aioredis.Redis, library: str, acl_dir: Path | None) -> SetupReport:
    # Every password file read and checked before the first change to Redis.
    passwords = role_passwords(acl_dir) if acl_dir is not None else {}
    keys = LibraryKeys(library)
    report = SetupReport(library)
    for name, source in function_sources().items():
        await r.function_load(source, replace=True)
        report.functions.append(name)
    for service in SERVICES:
        for stream in keys.streams(service):
            try:
                await r.xgroup_create(stream, keys.group(service), id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            report.streams.append(stream)
    if acl_dir is None:
        return report
    for role, (password, how) in passwords.items():
        arguments = setuser_arguments(library, role, password)
        await r.execute_command("ACL", "SETUSER", *arguments)  # type: ignore[no-untyped-call]
        report.users[role] = (user_name(library, role), str(acl_dir / role), how)
    try:
        await r.execute_command("ACL", "SAVE")  # type: ignore[no-untyped-call]
        report.acl_saved = True
    except ResponseError as exc:
        if "ACL file" not in str(exc) and "aclfile" not in str(exc):
            raise
    report.advice = await redis_advice(r)
    return report


MAX_VALUE = 1024 * 1024


async def redis_advice(r: aioredis.Redis) -> list[str]:
    """Bounds a Redis shared by role users should have (the chart's Redis has them): a
    role may only append or read, but Redis's defaults let a value or an unread reply be
    as large as memory (docs/security.md, breakers)."""
    try:
        config = await r.config_get("proto-max-bulk-len")
        config.update(await r.config_get("client-output-buffer-limit"))
        value = int(text(config["proto-max-bulk-len"]))
        limits = text(config["client-output-buffer-limit"])
    except (ResponseError, KeyError, ValueError):
        return []  # CONFIG refused (a managed Redis): nothing to say
    advice = []
    if value > MAX_VALUE:
        advice.append(
            f"proto-max-bulk-len is {value} bytes: a client may submit (or ring the doorbell "
            "with) values that large, which Redis and every Lending worker then copy; set "
            "`proto-max-bulk-len 1mb`"
        )
    normal = limits.split()[1:4] if limits.startswith("normal ") else []
    if normal and normal[0] == "0":
        advice.append(
            "client-output-buffer-limit has no bound for normal clients: a role may hold "
            "Redis's memory with replies it does not read; set "
            "`client-output-buffer-limit normal 64mb 32mb 60`"
        )
    return advice


def acl_file(library: str, password_dir: Path | None) -> str:
    """The roles as an ACL file; with ``password_dir``, each user's password as a SHA-256
    hash of the file there (the file itself is never printed)."""
    # Nothing but `user` lines: Redis refuses an ACL file with any other line.
    if password_dir is not None and not password_dir.is_dir():
        # A mistyped folder must not print users without passwords as if all were well.
        raise ConfigError(f"--password-dir {password_dir} is not a folder")
    lines = []
    for role in ROLES:
        digest = None
        if password_dir is not None and os.path.lexists(password_dir / role):
            password = read_owned_password_file(str(password_dir / role))
            digest = hashlib.sha256(password.encode()).hexdigest()
        lines.append(acl_file_line(library, role, digest))
    return "\n".join(lines)
