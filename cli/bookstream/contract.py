"""The wire contract as ``bookstream info --json`` shows it to producers written by
someone else: for each kind a client submits (``events.SUBMISSIONS``) and for the
``Outcome``, its JSON schema and an example, both made from the msgspec structs of
``bookstream_core.events``. Nothing here lists a field: a field added there shows here."""

from __future__ import annotations

from typing import Any

import msgspec
from bookstream_core.events import SUBMISSIONS, Outcome
from msgspec import inspect


def schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The struct's JSON schema (self-contained: ``$ref`` into its own ``$defs``), its
    patterns in the ECMA-262 form JSON Schema uses."""
    result: dict[str, Any] = _ecma(msgspec.json.schema(struct))
    return result


def _ecma(node: Any) -> Any:
    """Python's end anchor ``\\Z`` (ids.py: ``$`` would let a final newline through)
    is ``$`` in ECMA-262, where ``$`` matches only at the end without the m flag;
    ``\\Z`` there is no anchor at all (breaker: a JavaScript producer's validator threw
    on it, or read it as a letter Z)."""
    if isinstance(node, dict):
        return {
            k: v.replace("\\Z", "$") if k == "pattern" and isinstance(v, str) else _ecma(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_ecma(item) for item in node]
    return node


def example(struct: type[msgspec.Struct], known: dict[str, object] | None = None) -> object:
    """A value of ``struct`` that its decoder accepts, every field given (the optional ones
    too, so that a producer sees them); ``known``: values for fields by name (the
    library: a made-up one would be refused by the workers of this one)."""
    return _sample(inspect.type_info(struct), "", known or {})


def _sample(info: inspect.Type, name: str, known: dict[str, object]) -> object:
    if name in known:
        return known[name]
    if isinstance(info, inspect.StructType):
        tag = {info.tag_field: info.tag} if info.tag_field else {}
        fields = {f.encode_name: _sample(f.type, f.name, known) for f in info.fields}
        return tag | fields
    if isinstance(info, inspect.Metadata):  # a described or bounded type: its value's form
        return _sample(info.type, name, known)
    if isinstance(info, inspect.LiteralType):
        return info.values[0]
    if isinstance(info, inspect.StrType):
        # "user-1", "book-1": valid under every id pattern (ids.py), and readable.
        return f"{name.removesuffix('s') or 'text'}-1"
    if isinstance(info, inspect.BoolType):
        return True
    if isinstance(info, inspect.IntType | inspect.FloatType):
        return max(1, info.ge or 0)
    if isinstance(info, inspect.ListType):
        return [_sample(info.item_type, name, known)] * max(1, info.min_length or 0)
    if isinstance(info, inspect.DictType):
        return {str(_sample(info.key_type, "key", known)): _sample(info.value_type, name, known)}
    if isinstance(info, inspect.UnionType):  # an optional field: show its value's form
        given = [t for t in info.types if not isinstance(t, inspect.NoneType)]
        return _sample(given[0], name, known)
    raise TypeError(f"no example for a field of type {info!r} ({name}): add it here")


def contract(library: str) -> dict[str, object]:
    """What a foreign producer submits and what it reads back, by kind."""
    known: dict[str, object] = {"library": library}
    return {
        "events": {kind: example(struct, known) for kind, struct in SUBMISSIONS.items()},
        "schemas": {kind: schema(struct) for kind, struct in SUBMISSIONS.items()},
        "outcome": {"example": example(Outcome), "schema": schema(Outcome)},
    }
