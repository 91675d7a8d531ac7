"""Property: whatever a producer writes into an inbox (any fields, any bytes, events
that are almost right), real workers never die, never leave an entry pending, and answer
every request they can identify; valid requests through the client keep working."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RedisServer, WorkerProcess, wait_for

LIB = "prop"
EXAMPLES = int(os.environ.get("BOOKSTREAM_PROPERTY_EXAMPLES", "2000"))

valid_id = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}\Z")
ids = st.one_of(
    valid_id,
    valid_id,
    st.text(max_size=30),
    st.sampled_from(["", " ", "a\n", "x" * 65, "\u2028", "a b", "-x"]),
)
books = st.one_of(
    st.lists(st.text(min_size=1, max_size=12), min_size=0, max_size=40),
    st.text(max_size=5),
    st.integers(),
    st.none(),
)
events = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 2, "1", None]),
        "type": st.sampled_from(
            ["request", "return"] * 3
            + ["fetched", "unfetched", "fetch", "reshelve", "unfetch", "x"]
        ),
        "id": ids,
    },
    optional={
        "user": st.one_of(st.text(max_size=12), st.integers()),
        "books": books,
        "eid": ids,
        "fetch": ids,
        "library": st.sampled_from([LIB, "other", ""]),
        "reason": st.text(max_size=80),
    },
)
event_json = events.map(lambda e: json.dumps(e).encode())
values = st.one_of(
    event_json,
    event_json,
    event_json,
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
)
others = st.dictionaries(st.binary(min_size=1, max_size=10), values, max_size=5)
entries = st.one_of(
    st.builds(lambda e, more: {**more, b"e": e}, values, others),
    st.builds(lambda e, more: {**more, b"e": e}, values, others),
    others.filter(bool),
)


def _drained(r: redis.Redis) -> bool:
    for service in ("lending", "shelving"):
        inbox = f"bs:{{{LIB}}}:{service}:inbox"
        for group in r.xinfo_groups(inbox):
            last = group["last-delivered-id"].decode()
            if group["pending"] or r.xrange(inbox, min=f"({last}", count=1):
                return False
    return True


def _answerable(fields: dict[bytes, bytes]) -> str | None:
    """The id of a client event the workers can identify (and so must answer)."""
    try:
        event = json.loads(fields.get(b"e", b""))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(event, dict) or event.get("type") not in ("request", "return"):
        return None
    rid = event.get("id")
    import re

    if isinstance(rid, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", rid):
        return rid
    return None


@pytest.mark.timeout(900)
def test_any_entry_is_applied_rejected_or_set_aside(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    r = redis_server.client()
    extra = ["--log-level", "warning", "--claim-idle-ms", "1000"]
    workers = [
        start_worker(s, redis_server, library=LIB, extra=extra) for s in ("lending", "shelving")
    ]
    seen: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fields=entries, to_shelving=st.booleans())
    def check(fields: dict[bytes, bytes], to_shelving: bool) -> None:
        inbox = f"bs:{{{LIB}}}:{'shelving' if to_shelving else 'lending'}:inbox"
        r.xadd(inbox, fields)  # type: ignore[arg-type]
        wait_for(lambda: _drained(r), timeout=20, interval=0.002)
        rid = None if to_shelving else _answerable(fields)
        if rid is not None:
            seen.append(rid)
            assert r.exists(f"bs:{{{LIB}}}:outcome:{rid}"), fields
        for worker in workers:
            assert worker.process.poll() is None, worker.output()[-2000:]

    check()
    assert len(seen) > EXAMPLES // 20  # the strategy does reach the answerable paths

    from bookstream import Client

    with Client(redis_server.url, library=LIB) as client:
        outcome = client.request("after-all", ["a-fresh-book"], timeout=20)
    assert outcome.status == "accepted"
