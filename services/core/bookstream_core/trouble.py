"""Errors that are Redis's or the deployment's fault, never an entry's.

A worker that blamed such an error on the entry it was applying would dead-letter valid
requests during a passing memory pressure, or crash-loop on a missing function. These
errors leave the batch pending: the worker reports itself not ready, backs off and tries
again (loading its functions and creating its group again first when Redis lost them).
"""

from __future__ import annotations

from redis.exceptions import ResponseError

# Error replies (their first word, or a phrase inside) that say nothing about the entry.
_TROUBLE = (
    "OOM",  # maxmemory reached: writes refused until memory is freed
    "NOPERM",  # the worker's ACL user lacks a right
    "BUSY",  # another script is running past the time limit
    "LOADING",  # Redis is loading its data set
    "READONLY",  # connected to a replica (a failover in progress)
    "MASTERDOWN",
    "NOREPLICAS",
    "MISCONF",  # persistence failing: Redis refuses writes
    "CLUSTERDOWN",
    "TRYAGAIN",
    "BSENV",  # a function's own check: a key of the wrong type, a stream out of ids...
)
# Phrases inside other errors that say the same (a script's own ACL refusal is a plain ERR).
_TROUBLE_PHRASES = (
    "NOPERM ",
    "BSENV ",
    "OOM ",
    "can't run this command",
    "no permissions to access",
)
# Redis lost what a worker prepares at start (restarted empty, failed over to an
# empty replica): prepare again.
_LOST = ("NOGROUP", "Function not found", "NOSCRIPT")


class RedisTrouble(Exception):
    """A Redis error that is not the entry's fault; ``lost_state`` asks for prepare()."""

    def __init__(self, message: str, *, lost_state: bool) -> None:
        super().__init__(message)
        self.lost_state = lost_state


def trouble(exc: ResponseError) -> RedisTrouble | None:
    """The RedisTrouble an error reply means, or None if it may be the entry's fault."""
    message = str(exc)
    # redis-py strips the code of the errors it knows (OOM, NOPERM...) into status_code.
    code = getattr(exc, "status_code", None) or message.split(" ", 1)[0]
    if code in _LOST or any(word in message for word in _LOST):
        return RedisTrouble(f"{code} {message}", lost_state=True)
    if code in _TROUBLE or any(phrase in message for phrase in _TROUBLE_PHRASES):
        return RedisTrouble(f"{code} {message}", lost_state=False)
    return None


def as_trouble(exc: BaseException) -> RedisTrouble:
    """Any failure of a call as Redis's trouble (one whose cause nobody recognised too)."""
    if isinstance(exc, RedisTrouble):
        return exc
    if isinstance(exc, ResponseError):
        return trouble(exc) or RedisTrouble(str(exc), lost_state=False)
    return RedisTrouble(repr(exc), lost_state=False)
