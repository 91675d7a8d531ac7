"""The README says what the code does: its settings table is the settings table."""

from __future__ import annotations

import re
from pathlib import Path

from bookstream_core.settings import SETTINGS, markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_readme_settings_table_is_made_from_the_settings() -> None:
    found = re.search(
        r"<!-- settings table:[^\n]*-->\n(.*?)\n<!-- end of settings table -->", README, re.S
    )
    assert found is not None, "the README lost its settings table markers"
    assert found.group(1).strip() == markdown_table(), (
        "README.md's settings table differs from bookstream_core/settings.py; paste:\n"
        + markdown_table()
    )


def test_every_variable_the_code_reads_is_a_setting() -> None:
    """A BOOKSTREAM_* variable read anywhere in the Python code is a row of the table."""
    known = {s.variable for s in SETTINGS}
    for folder in ("services", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            for name in re.findall(r"\bBOOKSTREAM_[A-Z_]+\b", path.read_text()):
                if name != "BOOKSTREAM_":
                    assert name in known, f"{path.relative_to(ROOT)} reads {name}, not a setting"


def test_the_readme_does_not_promise_a_redis_cluster() -> None:
    assert "one hash slot per library; a Redis Cluster is not supported yet" in " ".join(
        README.split()
    )


def test_the_commands_section_lists_every_command() -> None:
    import argparse

    from bookstream.parser import build_parser

    section = README.split("### Commands\n", 1)[1].split("\n### ", 1)[0]
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name in sub.choices:
        assert f"| `bookstream {name}" in section, f"README's Commands lacks `bookstream {name}`"
    for worker in ("bookstream-lending", "bookstream-shelving"):
        assert f"`{worker} [NAME]`" in section
