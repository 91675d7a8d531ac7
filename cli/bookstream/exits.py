"""What each ``bookstream`` command's exit codes mean: its ``--help`` ends with them, and
tests/cli/test_exit_codes.py runs the commands to hold them to it. A code a command never
returns is not listed on it (``status`` denies nothing)."""

from __future__ import annotations

import textwrap

from bookstream_core.runner import EXITS as WORKER_EXITS

EXIT_OK, EXIT_DENIED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
#: The output could not be written (sysexits.h's EX_IOERR): not "denied", not "Redis
#: unreachable", for a command that may have done its work.
EXIT_OUTPUT = 74

#: Every command's 2: argparse's, a setting's (an option or a variable), a bad id.
BAD = "bad input: an unknown option, a bad value of an option or a variable"
#: Every command that talks to Redis: 3 (those with --timeout: ``WAITED``).
REDIS = "Redis unreachable or refusing (the login, a missing right)"
WAITED = "Redis unreachable or silent past --timeout, or refusing (the login, a missing right)"

Codes = dict[int, str]

_SUBMIT: Codes = {
    0: "accepted (a request) or processed (a return); with --no-wait: submitted",
    1: "denied or rejected",
    2: f"{BAD}; an empty or over-long id, more than 32 books, a request id already used "
    "for other books, by another user or for the other kind",
    3: f"no outcome in time, no Lending worker running, or {WAITED}",
    130: "interrupted (Ctrl-C): the request, which may have been submitted, is named",
}
#: retry's and purge's 2 besides BAD.
NAMED = "a malformed entry id, neither ids nor --all or both, ids none of which is a dead letter"
_DEAD_LETTERS: dict[str, Codes] = {
    "list": {0: "listed", 2: BAD, 3: WAITED},
    "show": {0: "shown", 2: f"{BAD}; a malformed entry id, no such dead letter", 3: WAITED},
    "retry": {
        0: "re-injected (ids that are no dead letter are named and left out)",
        2: f"{BAD}; {NAMED}",
        3: f"{WAITED}; a dead letter whose retry Redis refuses is kept",
    },
    "purge": {
        0: "purged (ids that are no dead letter are named and left out)",
        2: f"{BAD}; {NAMED}",
        3: WAITED,
    },
}
#: ``embedded``'s actions; BOOKSTREAM_HOME is a setting like any other (its 2).
HOME = (
    f"{BAD}; BOOKSTREAM_HOME relative, no directory of yours you may write in, or a folder "
    "of other files"
)
_EMBEDDED: dict[str, Codes] = {
    "status": {
        0: "running",
        2: HOME,
        3: "not running, or its directory holds what it does not trust",
    },
    "start": {
        0: "running (started, or found running)",
        2: HOME,
        3: "it could not start (no redis-server), or its directory holds what it does not trust",
    },
    "stop": {
        0: "stopped, or was not running",
        2: HOME,
        3: "it did not stop, or its pid file names another process",
    },
}

EXITS: dict[str, Codes] = {
    "request": _SUBMIT,
    "return": _SUBMIT,
    "outcome": {
        0: "accepted or processed",
        1: "denied or rejected",
        2: f"{BAD}; an unknown request id (nobody submitted it, or its outcome expired)",
        3: f"no outcome in time, or {WAITED}",
    },
    "status": {0: "printed", 2: f"{BAD}; an empty or over-long user or book id", 3: WAITED},
    "info": {
        0: "printed",
        2: f"{BAD}; a --function that is no functions library, --json with --functions or "
        "--function",
    },
    "audit": {0: "no violation", 1: "violations (each is listed)", 2: BAD, 3: WAITED},
    "dead-letters": {
        0: "done",
        2: f"{BAD}; a malformed entry id, show: no such dead letter, retry and purge: "
        "neither ids nor --all or both, ids none of which is a dead letter",
        3: WAITED,
    },
    **{f"dead-letters {action}": codes for action, codes in _DEAD_LETTERS.items()},
    "setup": {
        0: "the library is ready",
        2: f"{BAD}; a password file refused (another's, or one others may write)",
        3: f"{WAITED}: setup needs an admin",
    },
    "acl": {0: "printed", 2: f"{BAD}; --password-dir no folder, a password file refused"},
    "demo": {
        0: "every step was accepted or processed, and the audit found no violation",
        1: "a step was denied or rejected, or the audit found a violation",
        2: BAD,
        3: f"the embedded Redis could not start, or {REDIS}",
    },
    # The worker programs' own (bookstream-lending --help), but its 2.
    "serve": {**WORKER_EXITS, 2: HOME},
    "embedded": {
        0: "done (status: running)",
        2: HOME,
        3: "status: not running; start, stop: it could not, or its directory holds what it "
        "does not trust",
    },
    **{f"embedded {action}": codes for action, codes in _EMBEDDED.items()},
    "bench": {
        0: "the run was correct",
        1: "the run broke an invariant, or a worker or redis-benchmark failed",
        2: BAD,
        3: f"{REDIS}; redis-server or a worker program is not installed",
    },
}

#: Every command's 74 (``output.py``); request and return did their work all the same.
OUTPUT = "the output could not be written (a full disk, a closed stdout)"
for _name, _codes in EXITS.items():
    _codes[EXIT_OUTPUT] = (
        f"{OUTPUT}; a request submitted all the same is named, and how to see its outcome"
        if _name in ("request", "return")
        else OUTPUT
    )

#: The top level's summary: what a code means whichever command returns it.
SUMMARY: Codes = {
    0: "success: accepted or processed, nothing wrong found",
    1: "denied or rejected; the audit (demo, bench) found a violation; a worker failed",
    2: f"{BAD}; an id out of bounds, an unknown request id",
    3: "no outcome in time, no worker to answer, Redis unreachable or refusing; the "
    "embedded Redis not running or not trusted",
    EXIT_OUTPUT: f"{OUTPUT}; request, return: a request submitted all the same is named",
    130: "interrupted (Ctrl-C); serve: a second signal, stopped at once",
}


def epilog(command: str | None) -> str:
    """The exit codes ``command`` returns (None: the summary of all), for its --help."""
    codes = SUMMARY if command is None else EXITS[command]
    lines = ["exit codes:" if command else "exit codes (each command's --help lists its own):"]
    for code, meaning in sorted(codes.items()):
        lines.append(
            textwrap.fill(meaning, 79, initial_indent=f"  {code:<4}", subsequent_indent=" " * 6)
        )
    return "\n".join(lines)
