"""Redis refusing who we are, in plain words: a login refused (Redis was reached), or a
right missing, named with the library it was needed for."""

from __future__ import annotations

import re

from bookstream_core.config import RedisSettings
from bookstream_core.roles import ROLES
from redis.exceptions import AuthenticationError, RedisError

#: Redis's words for a missing right (NOPERM), inside a pipeline's or a function's error too.
_NO_RIGHT = re.compile(
    r"no permissions to (?:run the '(?P<command>[^']+)' command|access one of the "
    r"(?P<what>keys|channels))"
)
_ROLE_USER = re.compile(rf"bs-(?P<library>.+)-(?:{'|'.join(ROLES)})")


def _who(settings: RedisSettings) -> str:
    return f"user {settings.user!r}" if settings.user else "the default user"


def login_error(exc: BaseException) -> AuthenticationError | None:
    """The refused login behind a failed connection (redis-py wraps it in a plain
    ConnectionError), if that is what failed."""
    seen: BaseException | None = exc
    for _ in range(10):  # a chain may loop back on itself
        if seen is None or isinstance(seen, AuthenticationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def login_refused(exc: RedisError, settings: RedisSettings) -> str:
    """Redis answered and refused the login (a wrong password, an unknown or disabled
    user), or asks for one: not an unreachable Redis."""
    where = f"Redis at {settings.describe()}"
    words = str(exc).rstrip(".")
    if "NOAUTH" in words or "Authentication required" in words:
        return f"{where} asks for a login: give --password-file (or --password), and --user"
    return (
        f"{where} refused the login of {_who(settings)}: {words} (check the user and the "
        "password given)"
    )


def missing_right(exc: RedisError, settings: RedisSettings, library: str) -> str | None:
    """One line naming the right the user lacks and the library it was needed for; None
    when the error is no missing right."""
    found = _NO_RIGHT.search(str(exc))
    if found is None:
        return None
    if found["command"]:
        right = f"no permissions to run {found['command'].upper()} on library {library!r}"
    elif found["what"] == "channels":
        right = f"no permissions to subscribe to the outcome channels of library {library!r}"
    else:
        right = f"no permissions to access the keys of library {library!r}"
    line = f"Redis at {settings.describe()} refused: {_who(settings)} has {right}"
    role = _ROLE_USER.fullmatch(settings.user or "")
    if role is not None and role["library"] != library:
        line += f" (it is a role of library {role['library']!r}: give --library or --user)"
    return line
