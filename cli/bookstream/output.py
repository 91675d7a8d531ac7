"""The command's standard output, whose failures are said as such.

Written inside a Redis call's error handling, a full disk (``> /dev/full``) read as Redis
unreachable; elsewhere it was a traceback and exit 1, which means "denied". Every write and
flush failing with an OSError raises ``OutputFailed`` instead (exit 74, EX_IOERR). A broken
pipe stays what it is: the reader left (``| head``), which ends quietly.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO, cast

from bookstream.errors import OutputFailed


class _Checked:
    """A text stream whose write and flush failures are ``OutputFailed``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputFailed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputFailed(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def check_stdout() -> None:
    """Make ``sys.stdout`` checked; ``OutputFailed`` when there is none (``>&-``): whatever
    the command would print would be lost, and the next file opened would take its
    descriptor."""
    if sys.stdout is None:
        raise OutputFailed(None, "nothing was done")
    if not isinstance(sys.stdout, _Checked):
        sys.stdout = cast(TextIO, _Checked(sys.stdout))
