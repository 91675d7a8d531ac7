"""Password files (``--password-file``, a mounted Secret, ``setup --acl``'s files): a
regular file only, at most ``MAX_PASSWORD_BYTES`` (``/dev/zero`` or a FIFO would hang or
grow without end).
"""

from __future__ import annotations

import os
import stat

from bookstream_core.settings import ConfigError

MAX_PASSWORD_BYTES = 4096


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
