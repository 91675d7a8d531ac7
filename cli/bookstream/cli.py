"""The ``bookstream`` command.

Exit codes: 0 accepted/processed (or the command succeeded), 1 denied/rejected (or the
audit found violations), 2 bad input, 3 no outcome in time or Redis unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

from bookstream_core.config import (
    ConfigError,
    add_redis_arguments,
    add_worker_arguments,
    library_from,
    redis_settings_from,
)
from bookstream_core.embedded import EmbeddedRedisError
from bookstream_core.events import Outcome

from bookstream.client import AsyncClient
from bookstream.errors import BadInput, OutcomeTimeout, Unreachable
from bookstream.render import render_outcome

EXIT_OK, EXIT_DENIED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3

EPILOG = """exit codes:
  0  accepted / processed (or the command succeeded)
  1  denied or rejected (or the audit found violations)
  2  bad input (unknown option, empty or over-long id, too many books...)
  3  no outcome in time, or Redis unreachable"""


class Parser(argparse.ArgumentParser):
    """One clear line on a usage mistake, exit code 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def _submit_parser(sub: argparse._SubParsersAction[Parser], name: str, help_: str) -> None:
    p = sub.add_parser(
        name,
        help=help_,
        description=help_,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("user", help="the user's id")
    p.add_argument(
        "books", nargs="+", metavar="BOOK", help="book ids (may contain spaces or commas)"
    )
    p.add_argument("--request-id", help="your id for this request: resubmitting it is safe")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the outcome (10)"
    )
    p.add_argument("--no-wait", action="store_true", help="print the request id and exit")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    add_redis_arguments(p)


def build_parser() -> Parser:
    parser = Parser(
        prog="bookstream",
        description="Request and return books; run and inspect the library.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    _submit_parser(sub, "request", "ask for books and print what you got")
    _submit_parser(sub, "return", "bring books back and print what was taken")

    p = sub.add_parser("outcome", help="wait for the outcome of a submitted request")
    p.add_argument("request_id")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--json", action="store_true")
    add_redis_arguments(p)

    p = sub.add_parser(
        "status", help="totals and stream health; or where a book is, what a user holds"
    )
    p.add_argument("--user", help="the books this user holds")
    p.add_argument("--book", help="where this book is")
    p.add_argument("--json", action="store_true")
    add_redis_arguments(p)

    p = sub.add_parser("info", help="stream keys, groups and event schema for other producers")
    p.add_argument("--json", action="store_true")
    add_redis_arguments(p)

    p = sub.add_parser("audit", help="check the library's invariants (exit 1 on a violation)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--user-limit", type=int, default=5)
    p.add_argument("--storage-capacity", type=int, default=20)
    add_redis_arguments(p)

    p = sub.add_parser("dead-letters", help="inspect, retry or purge dead-letter entries")
    p.add_argument("action", choices=["list", "show", "retry", "purge"])
    p.add_argument("ids", nargs="*", metavar="ID", help="dead-letter entry ids (show/retry/purge)")
    p.add_argument("--all", action="store_true", help="retry or purge every entry")
    p.add_argument("--service", choices=["lending", "shelving"], help="only this service's")
    p.add_argument("--count", type=int, default=100, help="list at most this many per service")
    p.add_argument("--json", action="store_true")
    add_redis_arguments(p)

    p = sub.add_parser("demo", help="run the original sample's scenario on the embedded Redis")
    p.add_argument("--redis", metavar="URL", help="use this Redis instead of the embedded one")

    p = sub.add_parser("serve", help="run one lending and one shelving worker in this process")
    add_worker_arguments(p)

    p = sub.add_parser("embedded", help="manage the embedded Redis")
    p.add_argument("action", choices=["status", "start", "stop"])

    from bookstream.bench.options import add_bench_arguments

    p = sub.add_parser("bench", help="benchmark: drain or offer the workload, audit, report")
    add_bench_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (BadInput, ConfigError) as exc:
        print(f"bookstream: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OutcomeTimeout, Unreachable, EmbeddedRedisError) as exc:
        print(f"bookstream: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _client(args: argparse.Namespace) -> AsyncClient:
    settings = redis_settings_from(args, os.environ)
    return AsyncClient(library=library_from(args, os.environ), settings=settings)


def _async(fn: Callable[[], Awaitable[int]]) -> int:
    return asyncio.run(fn())  # type: ignore[arg-type]


def _dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command in ("request", "return"):
        return _async(lambda: _submit(args))
    if command == "outcome":
        return _async(lambda: _outcome(args))
    if command == "status":
        from bookstream.commands import status_command

        return _async(lambda: status_command(_client(args), args))
    if command == "info":
        from bookstream.commands import info_command

        return info_command(library_from(args, os.environ), args.json)
    if command == "audit":
        from bookstream.commands import audit_command

        return _async(lambda: audit_command(_client(args), args))
    if command == "dead-letters":
        from bookstream.commands import dead_letters_command

        return _async(lambda: dead_letters_command(_client(args), args))
    if command == "demo":
        from bookstream.demo import run_demo

        return run_demo(redis_url=args.redis)
    if command == "serve":
        from bookstream.local import serve

        return serve(args)
    if command == "embedded":
        from bookstream.commands import embedded_command

        return embedded_command(args.action)
    if command == "bench":
        from bookstream.bench.command import bench_command

        return bench_command(args)
    raise AssertionError(command)  # pragma: no cover - argparse restricts the choices


def _print_outcome(outcome: Outcome, as_json: bool) -> int:
    if as_json:
        from bookstream.status import to_json

        print(to_json(outcome.to_dict()))
    else:
        print(render_outcome(outcome))
    return EXIT_OK if outcome.ok else EXIT_DENIED


async def _submit(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        if args.no_wait:
            submit = client.submit_request if args.command == "request" else client.submit_return
            print(await submit(args.user, args.books, request_id=args.request_id))
            return EXIT_OK
        if args.timeout <= 0:
            raise BadInput("--timeout must be positive")
        call = client.request if args.command == "request" else client.return_books
        outcome = await call(
            args.user, args.books, request_id=args.request_id, timeout=args.timeout
        )
        if outcome.kind != args.command:
            raise BadInput(f"request id {outcome.request_id} was already used for a {outcome.kind}")
        return _print_outcome(outcome, args.json)


async def _outcome(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        return _print_outcome(await client.outcome(args.request_id, args.timeout), args.json)
