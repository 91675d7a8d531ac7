"""Errors the client raises; the CLI maps each to an exit code and prints it with
``report``, the one format of every error line (``bookstream: error: ...``)."""

from __future__ import annotations

import sys

from bookstream_core.usage import error_line


def report(message: object) -> None:
    """Print one error line of the bookstream command."""
    print(error_line("bookstream", message), file=sys.stderr)


def ask_again(request_id: str, library: str) -> str:
    """The command that shows a request's outcome. It must name the library, or it asks
    another one; it is printed as a shell takes it (a request id has no character a shell
    would read)."""
    again = f"bookstream outcome {request_id}"
    return again if library == "main" else f"{again} --library {library}"


def report_warning(message: object) -> None:
    """A line about part of a command that was not done, the rest being done."""
    print(f"bookstream: warning: {message}", file=sys.stderr)


class BookstreamError(Exception):
    """Base of everything the client raises on purpose."""


class BadInput(BookstreamError, ValueError):
    """The caller named something out of bounds (exit code 2)."""


class OutcomeTimeout(BookstreamError, TimeoutError):
    """No outcome arrived in time; the request may still be applied later (exit code 3)."""

    def __init__(self, request_id: str, timeout: float, library: str = "main") -> None:
        super().__init__(
            f"no outcome for request {request_id!r} within {timeout:g} s (is a lending and a "
            f"shelving worker running?); ask again later with: {ask_again(request_id, library)}"
        )
        self.request_id = request_id


class Unreachable(BookstreamError, ConnectionError):
    """Redis cannot be reached (exit code 3)."""


class NoWorker(BookstreamError):
    """No live Lending worker serves the library, so nothing would answer; nothing was
    submitted (exit code 3)."""

    def __init__(self, library: str) -> None:
        super().__init__(
            f"no Lending worker is running for library {library!r}, so nothing would answer: "
            "start one (bookstream serve, in another terminal), or queue it without "
            "waiting (--no-wait; submit_request or submit_return in Python)"
        )
        self.library = library


class Unknown(BookstreamError, LookupError):
    """Nobody submitted this request id, or its outcome expired (exit code 2)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"unknown request id {request_id!r}: nobody submitted it, or its outcome expired "
            "after the retention"
        )
        self.request_id = request_id


class BenchFailed(BookstreamError, RuntimeError):
    """A benchmark run could not be carried out: a worker or redis-benchmark failed (exit
    code 1, as a run that broke an invariant)."""


class OutputFailed(BookstreamError):
    """The command's output could not be written (a full disk, a closed stdout): the CLI's
    exit code 74, neither "denied" nor "Redis unreachable". ``done``: what the command did
    all the same, for the user who cannot read its output."""

    def __init__(self, cause: OSError | None, done: str = "") -> None:
        why = "stdout is closed" if cause is None else cause.strerror or str(cause)
        super().__init__(f"cannot write the output: {why}" + (f"; {done}" if done else ""))
        self.cause = cause
