"""The ``bookstream`` command.

Exit codes (each command's own: ``exits.py``): 0 accepted/processed (or the command
succeeded), 1 denied/rejected (or the audit found violations), 2 bad input, 3 no outcome
in time or Redis unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

from bookstream_core.config import (
    ConfigError,
    library_from,
    redis_settings_from,
    timeout_from,
)
from bookstream_core.embedded import EmbeddedRedisError
from bookstream_core.events import Outcome
from bookstream_core.ids import new_request_id
from bookstream_core.settings import ENV_PREFIX
from redis.exceptions import RedisError

from bookstream.client import AsyncClient
from bookstream.errors import (
    BadInput,
    BenchFailed,
    NoWorker,
    OutcomeTimeout,
    OutputFailed,
    Unknown,
    Unreachable,
    ask_again,
    report,
)
from bookstream.exits import (
    EXIT_DENIED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from bookstream.output import check_stdout
from bookstream.parser import build_parser, chosen
from bookstream.render import render_outcome
from bookstream.submissions import KINDS

#: What a shell reports for a process ended by SIGPIPE (128 + 13).
EXIT_CLOSED_PIPE = 141


def main(argv: Sequence[str] | None = None) -> None:
    try:
        check_stdout()
        code = run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # Whoever reads our output stopped reading (``| head``): leave quietly.
        _drop_output()
        code = EXIT_CLOSED_PIPE
    except OutputFailed as exc:
        report(exc)
        _drop_output()
        code = EXIT_OUTPUT
    sys.exit(code)


def _drop_output() -> None:
    """Keep Python from failing again when it flushes stdout at exit."""
    if sys.stdout is not None:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    if given and given[0].startswith("-") and given[0] not in ("-h", "--help", "--version"):
        parser.error(f"{given[0]}: options go after the command (bookstream COMMAND [options])")
    args, extra = parser.parse_known_args(given)
    if extra:  # named by the command's own --help, where its options are
        chosen(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return _dispatch(args)
    except (BadInput, ConfigError, Unknown) as exc:
        report(exc)
        return EXIT_USAGE
    except (OutcomeTimeout, Unreachable, NoWorker, EmbeddedRedisError) as exc:
        report(exc)
        return EXIT_UNAVAILABLE
    except BenchFailed as exc:
        report(exc)
        return EXIT_DENIED
    except RedisError as exc:
        # A reply the command did not expect (a missing right, a wrong key type): one line.
        report(f"Redis refused: {exc}")
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _client(args: argparse.Namespace) -> AsyncClient:
    return AsyncClient(
        library=library_from(args, os.environ),
        settings=redis_settings_from(args, os.environ),
        timeout=timeout_from(args, os.environ),
    )


def _async(fn: Callable[[], Awaitable[int]]) -> int:
    return asyncio.run(fn())  # type: ignore[arg-type]


def _dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command in KINDS:
        return _interruptible(args)
    if command == "outcome":
        return _async(lambda: _outcome(args))
    if command == "status":
        from bookstream.commands import status_command

        return _async(lambda: status_command(_client(args), args))
    if command == "info":
        from bookstream.commands import info_command

        return info_command(
            library_from(args, os.environ), args.json, args.functions, args.function
        )
    if command == "audit":
        from bookstream.commands import audit_command

        return _async(lambda: audit_command(_client(args), args))
    if command == "dead-letters":
        from bookstream.commands import dead_letters_command

        return _async(lambda: dead_letters_command(_client(args), args))
    if command == "setup":
        folder = Path(args.acl).expanduser() if args.acl else None
        return _async(lambda: _setup(args, folder))
    if command == "acl":
        from bookstream.setup import acl_file

        folder = Path(args.password_dir).expanduser() if args.password_dir else None
        print(acl_file(library_from(args, os.environ), folder))
        return 0
    if command == "demo":
        from bookstream.demo import run_demo

        # The demo empties library `demo`: only a Redis named on its own command line, never
        # one a stray Redis variable (BOOKSTREAM_REDIS_URL...) points at (else the embedded one).
        stray = f"{ENV_PREFIX}REDIS_"
        home = {k: v for k, v in os.environ.items() if not k.startswith(stray)}
        return run_demo(redis_settings_from(args, home))
    if command == "serve":
        from bookstream.local import serve

        return serve(args)
    if command == "embedded":
        from bookstream.commands import embedded_command

        return embedded_command(args)
    if command == "bench":
        from bookstream.bench.command import bench_command

        return bench_command(args)
    raise AssertionError(command)  # pragma: no cover - argparse restricts the choices


async def _setup(args: argparse.Namespace, folder: Path | None) -> int:
    from bookstream.setup import setup_library

    client = _client(args)
    async with client:
        with client.redis_errors():
            report = await setup_library(await client.redis(), client.library, folder)
    print("\n".join(report.lines()))
    return 0


def _print_outcome(outcome: Outcome, as_json: bool) -> int:
    if as_json:
        from bookstream.status import to_json

        print(to_json(outcome.to_dict()), flush=True)
    else:
        print(render_outcome(outcome), flush=True)  # flushed: a failure is told here
    return EXIT_OK if outcome.ok else EXIT_DENIED


@contextlib.contextmanager
def _telling(done: str) -> Iterator[None]:
    """An output that fails says what was done all the same: the user cannot read it."""
    try:
        yield
    except OutputFailed as exc:
        raise OutputFailed(exc.cause, done) from None


def _interruptible(args: argparse.Namespace) -> int:
    """Submit; Ctrl-C names the request, which may have been submitted all the same (its
    id chosen here, so that it can be named)."""
    if args.request_id is None:
        args.request_id = new_request_id()
    try:
        return _async(lambda: _submit(args))
    except KeyboardInterrupt:
        again = ask_again(args.request_id, library_from(args, os.environ))
        print(
            f"bookstream: interrupted: request {args.request_id!r} may have been submitted; "
            f"{again} shows its outcome",
            file=sys.stderr,
        )
        raise


async def _submit(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        kind = KINDS[args.command]
        if args.no_wait:
            rid = await kind.submit(client, args.user, args.books, request_id=args.request_id)
            again = ask_again(rid, client.library)
            with _telling(f"{args.command} {rid!r} was submitted: {again} shows its outcome"):
                print(rid, flush=True)
            return EXIT_OK
        outcome = await kind.wait(
            client, args.user, args.books, request_id=args.request_id, timeout=client.timeout
        )
        if outcome.kind != args.command:
            raise BadInput(
                f"request id {outcome.request_id!r} was already used for a {outcome.kind}"
            )
        again = ask_again(outcome.request_id, client.library)
        with _telling(f"the outcome of request {outcome.request_id!r} is stored: {again} shows it"):
            return _print_outcome(outcome, args.json)


async def _outcome(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        return _print_outcome(await client.outcome(args.request_id, client.timeout), args.json)
