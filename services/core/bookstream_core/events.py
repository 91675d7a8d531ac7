"""Versioned event schemas: what travels through the inbox streams, and the Outcome.

Every stream entry has one field, ``e``, holding a JSON object with a schema version
``v`` and a ``type``. Clients and other producers only ever submit ``request`` and
``return`` events, through the door (``bookstream info --json`` prints how), which Lending
admits into its inbox; ``fetch``/``reshelve``/``unfetch`` travel from
Lending to Shelving's inbox, ``fetched``/``unfetched`` back on Lending's replies stream.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Final, Literal

import msgspec

from bookstream_core.ids import (
    ID_PATTERN,
    MAX_BOOKS_PER_EVENT,
    MAX_ID_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_PATTERN,
)
from bookstream_core.types import OutcomeKind, OutcomeStatus, UnavailableReason

SCHEMA_VERSION: Final = 1
EVENT_FIELD = b"e"

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
RequestId = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=MAX_REQUEST_ID_LENGTH, pattern=REQUEST_ID_PATTERN),
]
Books = Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_BOOKS_PER_EVENT)]
#: Written as the integer 1 (not 1.0 or 1e0: the door and the workers refuse those).
Version = Annotated[Literal[1], msgspec.Meta(description="the schema version, written 1")]


class EventBase(msgspec.Struct, tag_field="type", frozen=True, kw_only=True, omit_defaults=True):
    v: Version
    id: RequestId
    #: Optional: a producer may name the library it means; a worker of another library
    #: sets such an event aside instead of applying it to the wrong books.
    library: str | None = None


class RequestEvent(EventBase, tag="request", frozen=True, forbid_unknown_fields=True):
    """A user asks for books (client -> lending). A field it does not know is refused, as
    the door refuses it: a submission means exactly what its fields say."""

    user: Id
    books: Books


class ReturnEvent(EventBase, tag="return", frozen=True, forbid_unknown_fields=True):
    """A user brings books back (client -> lending)."""

    user: Id
    books: Books


class FetchedEvent(EventBase, tag="fetched", frozen=True):
    """Shelving has taken a request's books off the shelves (shelving -> lending)."""

    books: Books


class FetchEvent(EventBase, tag="fetch", frozen=True):
    """Lending asks for books from the shelves (lending -> shelving)."""

    #: This event's own id (``<request id>:fetch``), for Shelving's exactly-once
    #: record; "eid" on the wire.
    event_id: RequestId = msgspec.field(name="eid")
    books: Books


class ReshelveEvent(EventBase, tag="reshelve", frozen=True):
    """Books travel back to the shelves (lending -> shelving)."""

    #: This event's own id (``<request id>:reshelve`` for a return's books,
    #: ``<request id>:rollback`` for a denied request's), for Shelving's exactly-once
    #: record; "eid" on the wire.
    event_id: RequestId = msgspec.field(name="eid")
    books: Books


class UnfetchEvent(EventBase, tag="unfetch", frozen=True):
    """Lending gave a request up: cancel its fetch ``fetch``, or undo it if it was
    applied already (lending -> shelving)."""

    #: This event's own id (``<request id>:unfetch``), for Shelving's exactly-once
    #: record; "eid" on the wire.
    event_id: RequestId = msgspec.field(name="eid")
    fetch: RequestId
    books: Books


class UnfetchedEvent(EventBase, tag="unfetched", frozen=True):
    """Shelving set a request's fetch aside as a dead letter (shelving -> lending)."""

    reason: Annotated[str, msgspec.Meta(max_length=64)] = ""


#: What clients submit, by kind: a new kind (a hold, a renewal) is a row here (the door
#: takes its kinds and fields from it, the metrics a counter) and in types.OutcomeKind, a
#: row in Lending's KINDS (kinds.py) and HANDLERS, and in the CLI's submissions.KINDS and
#: render table (docs/design.md, "Adding an event kind").
Submission = RequestEvent | ReturnEvent
SUBMISSIONS: dict[str, type[Submission]] = {"request": RequestEvent, "return": ReturnEvent}

LendingEvent = RequestEvent | ReturnEvent | FetchedEvent | UnfetchedEvent
ShelvingEvent = FetchEvent | ReshelveEvent | UnfetchEvent

lending_decoder = msgspec.json.Decoder(LendingEvent)
shelving_decoder = msgspec.json.Decoder(ShelvingEvent)
_encoder = msgspec.json.Encoder()


def event_type(event: EventBase) -> str:
    """The event's ``type`` on the wire (its struct's tag)."""
    return str(type(event).__struct_config__.tag)


def encode_event(event: EventBase) -> bytes:
    return _encoder.encode(event)


def submission_digest(payload: bytes) -> str:
    """Names one submission by its bytes (a rejected outcome carries it): a twin with the
    same request id but other bytes cannot pass for it."""
    # SHA-1 because Lending's functions name a submission too (a handler's failure), and
    # Redis's Lua has redis.sha1hex alone; a twin's bytes would need a second preimage.
    return hashlib.sha1(payload).hexdigest()[:32]


class Unavailable(msgspec.Struct, frozen=True):
    book: str
    reason: UnavailableReason


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one request or return.

    ``status`` is ``accepted`` (request granted, maybe partly: see ``unavailable``),
    ``processed`` (return applied), ``denied`` (nothing changed; ``reason`` says why, a
    ``types.DenialReason``) or ``rejected`` (the event could not be applied at all, e.g.
    malformed; ``reason`` says why, in free text). ``books_in_hand`` is the user's books
    after the outcome.
    """

    request_id: str
    kind: OutcomeKind
    status: OutcomeStatus
    user: str = ""
    #: The books asked for (a request) or brought back (a return), each once, sorted; none
    #: in a rejection. A resubmission of the id with other books is refused (the door, the
    #: client), not shown this outcome.
    books: list[str] = []
    lent: list[str] = []
    unavailable: list[Unavailable] = []
    returned: list[str] = []
    not_held: list[str] = []
    #: A DenialReason when denied; for rejected, why (msgspec takes no union of a
    #: Literal and str, so it is typed as text).
    reason: str | None = None
    books_in_hand: list[str] = []
    limit: int | None = None
    #: For ``rejected``: the inbox entry that was set aside (its request id may also have
    #: been sent by someone else, correctly, in another entry).
    entry: str | None = None
    #: For ``rejected``: ``submission_digest`` of the entry set aside, so that its
    #: submitter can tell its own submission's rejection from a malformed twin's.
    submission: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("accepted", "processed")

    def to_dict(self) -> dict[str, object]:
        result: dict[str, object] = msgspec.to_builtins(self)
        return result


outcome_decoder = msgspec.json.Decoder(Outcome)


def decode_outcome(raw: bytes | str) -> Outcome:
    return outcome_decoder.decode(raw)
