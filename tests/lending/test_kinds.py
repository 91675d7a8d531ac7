"""Lending's one table of kinds (kinds.py) agrees with everything that lists kinds: the
events Lending decodes, the kinds clients submit, lending.lua's HANDLERS, and the stream
each kind may arrive on as the Lua reads it."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from bookstream import render
from bookstream_core.events import SUBMISSIONS, LendingEvent
from bookstream_core.metrics import Metrics
from bookstream_core.types import DenialReason, OutcomeKind, UnavailableReason
from bookstream_lending import kinds
from bookstream_lending.functions import SOURCE

LUA = Path(kinds.__file__).with_name("lending.lua").read_text()


def test_every_lending_event_is_a_row_and_a_lua_handler() -> None:
    assert {kind.event for kind in kinds.KINDS.values()} == set(typing.get_args(LendingEvent))
    for name, kind in kinds.KINDS.items():
        assert str(kind.event.__struct_config__.tag) == name
    found = re.search(r"local HANDLERS = \{(.*?)\n\}", LUA, re.S)
    assert found is not None
    handlers = set(re.findall(r"\[?'?(\w+)'?\]? = \{on_\w+", found.group(1)))
    assert handlers == set(kinds.KINDS)


def test_clients_submit_exactly_the_inbox_kinds() -> None:
    on_inbox = {name for name, kind in kinds.KINDS.items() if kind.stream == "inbox"}
    assert on_inbox == set(SUBMISSIONS)
    assert all(kinds.DECIDES[name] == name for name in SUBMISSIONS)


def test_the_lua_reads_each_kind_s_stream_from_the_table() -> None:
    assert f"local STREAM_KINDS = {kinds.stream_kinds_lua()}\n" in SOURCE
    assert '"fetched"] = true' in kinds.stream_kinds_lua().split("replies", 1)[1]


def test_the_outcome_and_the_metrics_know_every_submitted_kind() -> None:
    """``types.OutcomeKind`` is the type form of SUBMISSIONS' keys (a Literal cannot be
    made from the table for mypy): a new kind fails here until it is added there."""
    assert typing.get_args(OutcomeKind) == tuple(SUBMISSIONS)
    counters = Metrics().outcomes_by_kind
    assert set(counters) == set(SUBMISSIONS)
    assert counters["request"]._name == "bookstream_requests"  # the dashboards' name


def test_every_reason_has_words_in_the_cli() -> None:
    reasons = typing.get_args(UnavailableReason) + typing.get_args(DenialReason)
    assert set(render.REASONS) == set(reasons)
