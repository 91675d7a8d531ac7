"""Shelving's service: one table of event kinds drives what it refuses and what it applies."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from bookstream_core.config import WorkerSettings
from bookstream_core.events import ShelvingEvent
from bookstream_core.keys import LibraryKeys
from bookstream_core.metrics import Metrics
from bookstream_core.service import InvalidEvent
from bookstream_shelving import service
from bookstream_shelving.keys import ShelvingKeys
from bookstream_shelving.service import ARGUMENTS, ShelvingService

KEYS = LibraryKeys("t")
LUA = Path(service.__file__).with_name("shelving.lua").read_text()


def test_every_shelving_kind_is_a_row_of_the_table_and_of_the_lua_handlers() -> None:
    assert set(ARGUMENTS) == set(typing.get_args(ShelvingEvent))
    found = re.search(r"local HANDLERS = \{([^}]*)\}", LUA)
    assert found is not None
    handlers = set(re.findall(r"(\w+) = on_\w+", found.group(1)))
    assert handlers == {str(kind.__struct_config__.tag) for kind in ARGUMENTS}


@pytest.fixture
async def shelving(aredis: aioredis.Redis) -> ShelvingService:
    await aredis.xgroup_create(KEYS.inbox("shelving"), "shelving", id="0", mkstream=True)
    await aredis.xgroup_create(KEYS.replies, "lending", id="0", mkstream=True)
    worker = ShelvingService(aredis, KEYS, WorkerSettings("shelving", "w1", "t"), Metrics())
    await worker.load()
    return worker


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"v":1,"type":"fetch","id":"r1","eid":"r2:fetch","books":["a"]}', "r1:fetch"),
        (
            b'{"v":1,"type":"unfetch","id":"r1","eid":"r1:unfetch","fetch":"r2:fetch",'
            b'"books":["a"]}',
            "must name its request's fetch",
        ),
        (
            b'{"v":1,"type":"unfetch","id":"r1","eid":"r1:x","fetch":"r1:fetch","books":["a"]}',
            "must name its request's fetch",
        ),
    ],
)
def test_an_event_naming_another_request_is_refused(
    shelving: ShelvingService, payload: bytes, reason: str
) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(reason)):
        shelving.decode(KEYS.inbox("shelving"), payload)


async def test_each_kind_is_applied_through_its_row(
    shelving: ShelvingService, aredis: aioredis.Redis
) -> None:
    """fetch counts off, reshelve counts back, and an unfetch cancels the fetch it names."""
    inbox = KEYS.inbox("shelving")
    payloads = [
        b'{"v":1,"type":"fetch","id":"r1","eid":"r1:fetch","books":["a","b"]}',
        b'{"v":1,"type":"reshelve","id":"r1","eid":"r1:rollback","books":["a"]}',
        b'{"v":1,"type":"unfetch","id":"r2","eid":"r2:unfetch","fetch":"r2:fetch","books":["c"]}',
        b'{"v":1,"type":"fetch","id":"r2","eid":"r2:fetch","books":["c"]}',
    ]
    for payload in payloads:
        await aredis.xadd(inbox, {"e": payload})
    ((_, entries),) = await aredis.xreadgroup("shelving", "w1", {inbox: ">"})
    batch = [(entry_id, shelving.decode(inbox, fields[b"e"])) for entry_id, fields in entries]
    await shelving.apply(inbox, batch)
    # b is off the shelf; a went back; the unfetch came first, so the late fetch of c is
    # a duplicate of its cancellation and nothing of r2 is off.
    assert await aredis.hgetall(ShelvingKeys(KEYS).off_shelf) == {b"b": b"1"}
    assert await aredis.xpending(inbox, "shelving") == {
        "pending": 0, "min": None, "max": None, "consumers": []
    }  # fmt: skip
