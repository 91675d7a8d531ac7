"""`bookstream info --json` shows the wire contract made from events.py's structs: each
example decodes strictly with the decoders the workers and clients use, and the door
accepts each event as printed."""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import msgspec
import redis.asyncio as aioredis
from bookstream import contract
from bookstream_core.events import (
    SUBMISSIONS,
    Outcome,
    encode_event,
    lending_decoder,
    outcome_decoder,
)
from bookstream_core.keys import LibraryKeys
from redis.exceptions import ResponseError

from tests.conftest import run_cli


def _info(env: dict[str, str]) -> dict[str, object]:
    done = run_cli(env, "info", "--json", "--library", "lib1")
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


def _names(struct: type[msgspec.Struct]) -> set[str]:
    return set(struct.__struct_encode_fields__)


def test_each_event_example_decodes_strictly_with_every_field(
    bookstream_env: dict[str, str],
) -> None:
    producer = _info(bookstream_env)["producer"]
    assert isinstance(producer, dict)
    assert set(producer["events"]) == set(SUBMISSIONS) == set(producer["schemas"])
    for kind, example in producer["events"].items():
        decoded = lending_decoder.decode(json.dumps(example))
        assert type(decoded) is SUBMISSIONS[kind]
        # Every field shown, the optional library included, and nothing the struct lacks:
        # encoding what was decoded gives the example back.
        assert set(example) == _names(SUBMISSIONS[kind]) | {"type"}, kind
        assert json.loads(encode_event(decoded)) == example
        assert example["library"] == "lib1"
        schema = producer["schemas"][kind]
        (definition,) = schema["$defs"].values()
        assert set(definition["properties"]) == set(example)
        assert set(definition["required"]) == set(example) - {"library"}


def test_the_outcome_has_its_schema_and_an_example_that_decodes_strictly(
    bookstream_env: dict[str, str],
) -> None:
    outcomes = _info(bookstream_env)["outcomes"]
    assert isinstance(outcomes, dict)
    example = outcomes["example"]
    decoded = outcome_decoder.decode(json.dumps(example))
    assert set(example) == _names(Outcome)
    assert msgspec.to_builtins(decoded) == example
    definitions = outcomes["schema"]["$defs"]
    assert set(definitions["Outcome"]["properties"]) == _names(Outcome)
    assert "Unavailable" in definitions


async def test_the_door_accepts_each_example_as_printed(
    aredis: aioredis.Redis, bookstream_env: dict[str, str]
) -> None:
    producer = _info(bookstream_env)["producer"]
    assert isinstance(producer, dict)
    command = producer["submit"].split(" '", 1)[0].split()
    submissions = LibraryKeys("lib1").submissions
    for kind, example in producer["events"].items():
        await aredis.execute_command(*command, json.dumps(example))  # type: ignore[no-untyped-call]
        assert json.loads(await aredis.lindex(submissions, -1)) == example, kind  # type: ignore[misc]
    assert await aredis.llen(submissions) == len(SUBMISSIONS)


class Grown(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    flag: bool = False
    share: float | None = None
    counts: dict[str, int] = {}
    mode: Literal["x", "y"] = "y"
    inner: Outcome | None = None


def test_a_field_of_another_type_gets_an_example_its_decoder_accepts() -> None:
    """The contract may grow fields of other types (a flag, a number, a map)."""
    value = contract.example(Grown)
    decoded = msgspec.json.decode(json.dumps(value), type=Grown)
    assert msgspec.to_builtins(decoded) == value
    assert set(value) == _names(Grown)


async def test_the_schemas_refuse_what_the_door_refuses(
    aredis: aioredis.Redis, bookstream_env: dict[str, str]
) -> None:
    """Breaker: the schemas allowed an unknown field, which the door refuses, and wrote
    Python's end anchor \\Z, which an ECMA-262 validator (JavaScript, Go) rejects or reads
    as a letter. Each case here is judged the same by the schema and the door."""
    producer = _info(bookstream_env)["producer"]
    assert isinstance(producer, dict)
    assert "\\Z" not in json.dumps(producer["schemas"])
    command = producer["submit"].split(" '", 1)[0].split()
    example = producer["events"]["request"]
    cases = {
        "as printed": (example, True),
        "library null": ({**example, "library": None}, True),
        "an unknown field": ({**example, "x-trace": "abc"}, False),
        "no books": ({**example, "books": []}, False),
        "an id with a space": ({**example, "id": "a b"}, False),
    }
    validator = jsonschema.Draft202012Validator(producer["schemas"]["request"])
    for why, (event, valid) in cases.items():
        assert validator.is_valid(event) == valid, why
        try:
            await aredis.execute_command(*command, json.dumps(event))  # type: ignore[no-untyped-call]
            accepted = True
        except ResponseError as exc:
            assert str(exc).startswith("BSBAD "), exc
            accepted = False
        assert accepted == valid, why
