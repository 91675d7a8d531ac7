"""The ``bookstream`` command line: every subcommand and option, each with its help.

The connection and worker options come from the settings table
(``bookstream_core.settings``), so they, their variables and the README agree.
"""

from __future__ import annotations

import argparse
import textwrap
from importlib.metadata import PackageNotFoundError, version
from typing import TypeAlias

from bookstream_core import settings as table
from bookstream_core.config import add_redis_arguments, add_worker_arguments
from bookstream_core.usage import OneLineParser

from bookstream.exits import epilog
from bookstream.submissions import KINDS


class Parser(OneLineParser):
    """One clear line on a usage mistake (``bookstream: error: ...``), exit code 2."""


Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"


def count(text: str) -> int:
    """A whole number of at least 1 (argparse reports the error in one line)."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _command(
    sub: Subparsers, name: str, help_: str, description: str | None = None, under: str = ""
) -> Parser:
    """A (sub)command's parser, its --help ending with its own exit codes (``under``: the
    command whose action it is)."""
    parser: Parser = sub.add_parser(
        name,
        help=help_,
        # Wrapped here: the raw formatter keeps the epilog's lines, and the description's.
        description=textwrap.fill(description or help_, 79),
        epilog=epilog(f"{under} {name}".strip()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _json(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def _submit(sub: Subparsers, name: str, help_: str, description: str) -> None:
    p = _command(sub, name, help_, description)
    p.add_argument("user", help="the user's id")
    p.add_argument(
        "books", nargs="+", metavar="BOOK", help="book ids (may contain spaces or commas)"
    )
    p.add_argument("--request-id", help="your id for this request: resubmitting it is safe")
    p.add_argument("--no-wait", action="store_true", help="print the request id and exit")
    _json(p, "the outcome")
    add_redis_arguments(p, program=name)


def _dead_letters(sub: Subparsers) -> None:
    p = _command(
        sub,
        "dead-letters",
        "inspect, retry or purge dead-letter entries",
        "Entries a worker could not apply are set aside in its service's dead-letter stream.",
    )
    actions = p.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=Parser, help="what to do"
    )
    for name, help_ in (
        ("list", "list the dead letters"),
        ("show", "print one dead letter with its original fields"),
        ("retry", "re-inject dead letters into their inbox as new entries"),
        ("purge", "delete dead letters"),
    ):
        a = _command(actions, name, help_, under="dead-letters")
        if name == "show":
            a.add_argument("ids", nargs=1, metavar="ID", help="the dead-letter entry id")
        elif name in ("retry", "purge"):
            a.add_argument("ids", nargs="*", metavar="ID", help="dead-letter entry ids")
            a.add_argument("--all", action="store_true", help=f"{name} every entry")
        a.add_argument("--service", choices=["lending", "shelving"], help="only this service's")
        if name == "list":
            a.add_argument(
                "--count", type=count, default=100, help="list at most this many per service (100)"
            )
        _json(a)
        add_redis_arguments(a, program="dead-letters")


def _embedded(sub: Subparsers) -> None:
    p = _command(
        sub,
        "embedded",
        "manage the embedded Redis",
        "The embedded Redis: a private redis-server on a unix socket in $BOOKSTREAM_HOME "
        "(an absolute path; default $XDG_STATE_HOME/bookstream, else "
        "~/.local/state/bookstream), used when no Redis is named. It trusts only what it "
        "made as you: the directory must be yours, new, empty or its own (a folder of other "
        "files is refused); a symlink or another user's file in it, or a pid file naming "
        "another process, is refused (a wider mode than 0700 is narrowed once nothing "
        "foreign is found). stop signals only the redis-server it checked it started.",
    )
    actions = p.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=Parser, help="what to do"
    )
    status = _command(
        actions, "status", "is it running, and where (exit 3 if not running)", under="embedded"
    )
    _json(status)
    _command(actions, "start", "start it (or find it running) and print its URL", under="embedded")
    _command(actions, "stop", "stop it (its data stays on disk)", under="embedded")


def chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command given, down to its action (``dead-letters list``)."""
    current = parser
    for dest in ("command", "action"):
        name = getattr(args, dest, None)
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if name is None or not subs:
            break
        current = subs[0].choices[name]
    return current


def build_parser() -> Parser:
    parser = Parser(
        prog="bookstream",
        description="Request and return books; run and inspect the library.",
        epilog=epilog(None),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        parser_class=Parser,
        help="what to do (each has its own --help)",
    )
    for kind, row in KINDS.items():
        _submit(sub, kind, row.help, row.description)

    p = _command(sub, "outcome", "wait for (or re-read) the outcome of a submitted request")
    p.add_argument("request_id", metavar="REQUEST_ID", help="the id printed by --no-wait")
    _json(p, "the outcome")
    add_redis_arguments(p, program="outcome")

    p = _command(sub, "status", "totals and stream health; or where a book is, what a user holds")
    p.add_argument("--borrower", metavar="USER", help="the books this user holds")
    p.add_argument("--book", help="where this book is")
    _json(p)
    add_redis_arguments(p, program="status")

    p = _command(sub, "info", "stream keys, groups and event schema for other producers")
    _json(p, "everything, the event schema included,")
    p.add_argument(
        "--functions",
        action="store_true",
        help="the Redis Functions libraries and how an admin loads them",
    )
    p.add_argument(
        "--function",
        metavar="LIBRARY",
        help="print this Redis Functions library's source (to pipe into FUNCTION LOAD)",
    )
    table.add_options(p, [table.BY_KEY["library"]], "info")

    p = _command(sub, "audit", "check the library's invariants (exit 1 on a violation)")
    _json(p, "the report")
    table.add_options(p, table.rows("lending"), "audit")
    add_redis_arguments(p, program="audit")

    _dead_letters(sub)

    p = _command(
        sub,
        "setup",
        "prepare a library with an admin connection: functions, streams, role users",
        "Load the Redis Functions libraries, create every stream and group of the library, "
        "and with --acl one Redis ACL user per role (bs-NAME-lending, -shelving, -client, "
        "-viewer, -operator) whose password is the file DIR/<role>: an existing file's "
        "password is kept (only a file of yours or root's that group and others may not "
        "write), a missing one is generated (mode 0600; only into a directory nobody else "
        "may write in). Every file is checked before Redis is changed. Run it as an admin "
        "(the default user, or one allowed ACL and FUNCTION); again after an upgrade.",
    )
    p.add_argument("--acl", metavar="DIR", help="create the role users, passwords in DIR/<role>")
    add_redis_arguments(p, program="setup")

    p = _command(
        sub,
        "acl",
        "print the library's role users as a Redis ACL file",
        "Print the rules `setup --acl` applies, as lines of a Redis ACL file (aclfile), for "
        "admins who manage users themselves. With --password-dir each user gets the SHA-256 "
        "hash of its password file there; without, add a password to each line.",
    )
    p.add_argument("--password-dir", metavar="DIR", help="the folder of <role> password files")
    table.add_options(p, [table.BY_KEY["library"]], "acl")

    p = _command(
        sub,
        "demo",
        "run the original sample's scenario on the embedded Redis",
        "The original sample's scenario with one worker of each service in this process, on "
        "library 'demo' (emptied first), then an audit.",
    )
    # Its own --redis, not the table's: it empties library 'demo', so only a Redis named
    # on its command line counts, never one a Redis variable names (cli.py drops them).
    p.add_argument(
        "--redis",
        metavar="URL",
        help="the Redis to use (default: the embedded one, in $BOOKSTREAM_HOME); library "
        "'demo' on it is emptied, so only this option names one, never a variable",
    )

    p = _command(sub, "serve", "run one lending and one shelving worker in this process")
    add_worker_arguments(p, program="serve")

    _embedded(sub)

    from bookstream.bench.options import add_bench_arguments

    p = _command(sub, "bench", "benchmark: drain or offer the workload, audit, report")
    add_bench_arguments(p)
    return parser


def _version() -> str:
    try:
        return version("bookstream")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"
