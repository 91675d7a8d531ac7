"""The settings table's "for" column is exact: every parser lists precisely the table's
options the table says it takes, and a command's --help names only variables it reads."""

from __future__ import annotations

import argparse
import re

import pytest
from bookstream.parser import build_parser
from bookstream_core.config import add_worker_arguments
from bookstream_core.settings import BY_KEY, OPERATOR, SETTINGS, markdown_table, takers


def _leaves(
    parser: argparse.ArgumentParser, name: str = ""
) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every subcommand's parser; a nested one (dead-letters list) under its command's name."""
    found: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                found += _leaves(child, name or sub)
    return found or [(name, parser)]


def _all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    found = _leaves(build_parser())
    for service in ("lending", "shelving"):
        worker = argparse.ArgumentParser()
        add_worker_arguments(worker, (service,))  # type: ignore[arg-type]
        found.append((f"bookstream-{service}", worker))
    return found


def _table_options(parser: argparse.ArgumentParser) -> set[str]:
    """The table's settings a parser lists: their help names their variable."""
    helps = [a.help or "" for a in parser._actions]
    return {s.key for s in SETTINGS if any(h.endswith(f"[{s.variable}]") for h in helps)}


@pytest.mark.parametrize(("name", "parser"), _all_parsers())
def test_each_parser_lists_what_the_for_column_says(
    name: str, parser: argparse.ArgumentParser
) -> None:
    expected = {s.key for s in SETTINGS if s.flags and name in takers(s)}
    assert _table_options(parser) == expected, name


def test_the_demo_help_names_no_variable_it_ignores() -> None:
    """The demo reads only its own --redis (and the embedded Redis' own variables)."""
    (demo,) = [p for name, p in _all_parsers() if name == "demo"]
    text = demo.format_help()
    for s in SETTINGS:
        if s.scope != "embedded":
            assert f"[{s.variable}]" not in text, s.variable
    assert "--redis URL" in text and "BOOKSTREAM_REDIS" not in text


def test_the_legend_names_every_program_of_the_for_column() -> None:
    table = markdown_table()
    for name in {n for s in SETTINGS for n in takers(s)}:
        assert f"`{name}`" in table, name


@pytest.mark.parametrize(("name", "parser"), _all_parsers())
def test_a_help_names_only_options_its_program_takes(
    name: str, parser: argparse.ArgumentParser
) -> None:
    """A setting's help that names another setting names it as this program gives it
    (``--tls-key`` where there is one); a command in backticks is another program's."""
    options = {o for a in parser._actions for o in a.option_strings}
    for action in parser._actions:
        help_ = re.sub(r"`[^`]*`", "", action.help or "")
        if help_.endswith("]"):  # a row of the table
            for named in re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_):
                assert named in options, f"{name} {action.option_strings}: {named}"


def test_a_help_of_its_own_is_for_a_program_that_takes_the_setting() -> None:
    for s in SETTINGS:
        readers = set(takers(s)) | ({OPERATOR} if OPERATOR in (s.scope, *s.also) else set())
        for programs, _ in s.help_for:
            assert set(programs) <= readers, (s.key, programs)


def test_the_readme_names_a_setting_both_ways_and_the_operator_by_variable() -> None:
    cert = BY_KEY["tls_cert"]
    assert cert.readme().endswith("needs --tls-key or BOOKSTREAM_REDIS_TLS_KEY")
    assert cert.describe().endswith("needs --tls-key")
    assert cert.describe(OPERATOR).endswith("needs BOOKSTREAM_REDIS_TLS_KEY")
