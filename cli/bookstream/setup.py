"""``bookstream setup`` and ``bookstream acl``: prepare a library with an admin connection.

Setup loads the functions libraries, creates every stream and group, and with ``--acl DIR``
one Redis ACL user per role (bookstream_core.roles) whose password is the file
``DIR/<role>``: an existing file's password is kept (a mounted Secret works read-only),
a missing one is generated and written with mode 0600. Run it again after an upgrade (new
functions) or a password change (the users get the files' passwords).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from bookstream_core.config import ConfigError, read_password_file
from bookstream_core.keys import SERVICES, LibraryKeys
from bookstream_core.roles import ROLES, Role, acl_file_line, setuser_arguments, user_name
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
        return out


def role_password(folder: Path, role: Role) -> tuple[str, str]:
    """The role's password from ``folder/role``, or a new one written there (0600)."""
    path = folder / role
    if path.exists():
        return read_password_file(str(path)), "kept"
    password = secrets.token_urlsafe(32)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # O_EXCL: never write through a file (or a link) someone put there meanwhile.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write password file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(password + "\n")
    return password, "new"


async def setup_library(r: aioredis.Redis, library: str, acl_dir: Path | None) -> SetupReport:
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
    for role in ROLES:
        password, how = role_password(acl_dir, role)
        arguments = setuser_arguments(library, role, password)
        await r.execute_command("ACL", "SETUSER", *arguments)  # type: ignore[no-untyped-call]
        report.users[role] = (user_name(library, role), str(acl_dir / role), how)
    try:
        await r.execute_command("ACL", "SAVE")  # type: ignore[no-untyped-call]
        report.acl_saved = True
    except ResponseError as exc:
        if "ACL file" not in str(exc) and "aclfile" not in str(exc):
            raise
    return report


def acl_file(library: str, password_dir: Path | None) -> str:
    """The roles as an ACL file; with ``password_dir``, each user's password as a SHA-256
    hash of the file there (the file itself is never printed)."""
    # Nothing but `user` lines: Redis refuses an ACL file with any other line.
    lines = []
    for role in ROLES:
        digest = None
        if password_dir is not None and (password_dir / role).exists():
            password = read_password_file(str(password_dir / role))
            digest = hashlib.sha256(password.encode()).hexdigest()
        lines.append(acl_file_line(library, role, digest))
    return "\n".join(lines)
