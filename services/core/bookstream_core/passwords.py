"""Password files: reading one safely, and trusting one that sets a password.

Every password file (``--password-file``, a mounted Secret, ``setup --acl``'s files) is
read through :func:`read_password_file`: a regular file only, at most
``MAX_PASSWORD_BYTES`` (``/dev/zero`` or a FIFO would hang or grow without end).

``setup --acl`` and ``acl --password-dir`` make a file's content a Redis user's password,
so whoever could write the file could choose it. They read it through
:func:`read_owned_password_file`: every symlink on the way and the file itself must be
yours or root's (a Kubernetes Secret mount is root's links to root's files), and the file
not writable by group or others. New files go only into a directory that
:func:`open_private_directory` accepts: yours (or root's), not writable by group or others.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePath

from bookstream_core.settings import ConfigError

MAX_PASSWORD_BYTES = 4096
#: Symlinks followed at most while resolving a path (Linux's own limit).
MAX_LINKS = 40


def read_password_file(path: str) -> str:
    """The password a file holds (a mounted Secret, a file `bookstream setup` wrote)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read password file {path}: {exc.strerror}") from None
    try:
        return _read_open(fd, path)
    finally:
        os.close(fd)


def read_owned_password_file(path: str) -> str:
    """:func:`read_password_file` of a file only you or root could have written."""
    try:
        resolved = _resolve_owned(path, "password file")
        fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read password file {path}: {exc.strerror}") from None
    try:
        _check_owned(os.fstat(fd), "password file", path)
        return _read_open(fd, path)
    finally:
        os.close(fd)


def open_private_directory(path: Path) -> int:
    """The directory opened (a file descriptor: files are created relative to it, so it
    cannot be swapped after the check), made 0700 if missing; refused unless only you or
    root can write in it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        resolved = _resolve_owned(str(path), "password directory")
        fd = os.open(resolved, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot use password directory {path}: {exc.strerror}") from None
    try:
        _check_owned(os.fstat(fd), "password directory", str(path))
    except ConfigError:
        os.close(fd)
        raise
    return fd


def _read_open(fd: int, path: str) -> str:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise ConfigError(f"password file {path} is not a regular file")
    data = b""
    while len(data) <= MAX_PASSWORD_BYTES:
        chunk = os.read(fd, MAX_PASSWORD_BYTES + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"password file {path} is over {MAX_PASSWORD_BYTES} bytes")
    try:
        password = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read password file {path}: not UTF-8 text") from None
    if not password:
        raise ConfigError(f"password file {path} is empty")
    return password


def _trusted(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def _check_owned(st: os.stat_result, what: str, path: str) -> None:
    if not _trusted(st.st_uid):
        raise ConfigError(
            f"{what} {path} belongs to uid {st.st_uid}: only yours or root's is trusted"
        )
    if st.st_mode & 0o022:
        raise ConfigError(
            f"{what} {path} is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}): anyone who can write it chooses the password; "
            "chmod go-w it"
        )


def _resolve_owned(path: str, what: str) -> str:
    """The path with every symlink resolved (as realpath does), refusing a symlink that
    neither you nor root made: another user's link could point at any file they know
    the content of (a root-owned one included)."""
    pending = list(reversed(PurePath(os.path.abspath(path)).parts))
    resolved, links = "/", 0
    while pending:
        part = pending.pop()
        if part == "/":
            resolved = "/"
            continue
        if part == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, part)
        st = os.lstat(candidate)
        if not stat.S_ISLNK(st.st_mode):
            resolved = candidate
            continue
        links += 1
        if links > MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        if not _trusted(st.st_uid):
            raise ConfigError(
                f"{what} {path}: {candidate} is a symlink of uid {st.st_uid}; only yours or "
                "root's is trusted"
            )
        pending.extend(reversed(PurePath(os.readlink(candidate)).parts))
    return resolved
