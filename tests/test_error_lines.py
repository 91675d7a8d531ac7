"""Every program prints a mistake or a failure as one line in one format:
``PROGRAM: error: what happened`` (bookstream_core/usage.py)."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import VENV_BIN


@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [
        (["bookstream", "frobnicate"], {}, "bookstream: error: argument COMMAND: invalid choice"),
        (["bookstream", "request"], {}, "bookstream: error: the following arguments are required"),
        (["bookstream", "status", "--db", "x"], {}, "bookstream: error: --db must be a whole"),
        (["bookstream-lending", "--bogus"], {}, "bookstream-lending: error: unrecognized"),
        (
            ["bookstream-operator"],
            {"BOOKSTREAM_OPERATOR_INTERVAL": "0"},
            "bookstream-operator: error: BOOKSTREAM_OPERATOR_INTERVAL must be a positive",
        ),
    ],
)
def test_one_format_for_every_program(
    bookstream_env: dict[str, str], argv: list[str], env: dict[str, str], line: str
) -> None:
    done = subprocess.run(
        [str(VENV_BIN / argv[0]), *argv[1:]],
        capture_output=True, text=True, env={**bookstream_env, **env}, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(line), done.stderr
    assert len(done.stderr.splitlines()) == 1
