"""What a user submits is one table (``submissions.KINDS``): the CLI's subcommands, its
dispatch and the demo all read it, so a new kind is one row there."""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
from collections.abc import Callable

import pytest
from bookstream.client import AsyncClient
from bookstream.parser import build_parser
from bookstream.render import DETAILS
from bookstream.submissions import KINDS
from bookstream_core.events import SUBMISSIONS
from bookstream_core.keys import LibraryKeys

from tests.conftest import VENV_BIN, RedisServer, WorkerProcess, run_cli, wait_for


def test_the_kinds_are_the_wire_contracts_submissions() -> None:
    assert set(KINDS) == set(SUBMISSIONS) == set(DETAILS)
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for kind, row in KINDS.items():
        described = sub.choices[kind].description or ""
        assert " ".join(described.split()) == row.description  # (wrapped to 79 columns)


async def test_each_kinds_calls_submit_an_event_of_that_kind(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("lending", redis_server, library="kinds")
    start_worker("shelving", redis_server, library="kinds")
    async with AsyncClient(redis_server.url, "kinds") as client:
        for kind, row in KINDS.items():
            waited = await row.wait(client, "u1", ["geb"], request_id=f"{kind}-1", timeout=10)
            assert (waited.kind, waited.request_id, waited.ok) == (kind, f"{kind}-1", True)
            rid = await row.submit(client, "u1", ["geb"], request_id=f"{kind}-2")
            assert (await client.outcome(rid, 10)).kind == kind


@pytest.mark.usefixtures("served")
def test_the_cli_dispatches_each_kind_through_the_table(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
) -> None:
    for kind in KINDS:
        done = run_cli(bookstream_env, kind, "u1", "geb", server=redis_server)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{kind} "), done.stdout
        rid = run_cli(bookstream_env, kind, "u1", "geb", "--no-wait", server=redis_server)
        assert rid.returncode == 0, rid.stderr
        outcome = run_cli(bookstream_env, "outcome", rid.stdout.strip(), server=redis_server)
        assert outcome.stdout.startswith(f"{kind} {rid.stdout.strip()!r}"), outcome.stdout


@pytest.mark.parametrize("flags", [(), ("--request-id", "mine-1")])
def test_ctrl_c_while_waiting_names_the_request(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
    flags: tuple[str, ...],
) -> None:
    """Ctrl-C exited 130 saying nothing, the request submitted and its id never shown."""
    start_worker("lending", redis_server)  # no Shelving: the request waits for its books
    waiting = subprocess.Popen(
        [str(VENV_BIN / "bookstream"), "request", "u", "geb", *flags, "--timeout", "60",
         "--redis", redis_server.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bookstream_env,
    )  # fmt: skip
    r = redis_server.client()
    keys = LibraryKeys("main")
    wait_for(lambda: bool(r.llen(keys.submissions) or r.xlen(keys.inbox("lending"))))
    waiting.send_signal(signal.SIGINT)
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 130 and out == "", (out, err)
    found = re.fullmatch(
        r"bookstream: interrupted: request '(\S+)' may have been submitted; "
        r"bookstream outcome (\S+) shows its outcome\n",
        err,
    )
    assert found is not None and found[1] == found[2], err
    if flags:
        assert found[1] == "mine-1"
    # The id is the one submitted: its outcome is known (still waiting for Shelving).
    asked = run_cli(bookstream_env, "outcome", found[1], "--timeout", "1", server=redis_server)
    assert asked.returncode == 3 and "no outcome" in asked.stderr, asked
