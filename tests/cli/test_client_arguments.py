"""The Python client refuses arguments of the wrong type, and a timeout that is no positive
number, with BadInput before anything is sent (a timeout of 0 lent the book, then raised
OutcomeTimeout)."""

from __future__ import annotations

from typing import Any

import pytest
from bookstream import AsyncClient, BadInput, Client
from bookstream_core.keys import LibraryKeys

from tests.conftest import RedisServer

SUBMISSIONS = LibraryKeys("main").submissions
BAD_TIMEOUTS = [0, -1, float("nan"), float("inf"), "5", True]


def nothing_sent(server: RedisServer) -> None:
    r = server.client()
    assert not r.exists(SUBMISSIONS) and not r.keys("bs:{main}:*outcome*")


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
@pytest.mark.parametrize("call", ["request", "return_books"])
def test_a_bad_timeout_is_refused_before_submitting(
    served: RedisServer, call: str, timeout: Any
) -> None:
    with Client(served.url) as client, pytest.raises(BadInput, match="timeout must be"):
        getattr(client, call)("u", ["geb"], timeout=timeout)
    nothing_sent(served)


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
def test_a_bad_timeout_of_outcome_is_refused(redis_server: RedisServer, timeout: Any) -> None:
    with Client(redis_server.url) as client, pytest.raises(BadInput, match="timeout must be"):
        client.outcome("r-1", timeout=timeout)


async def test_the_async_client_too(served: RedisServer) -> None:
    async with AsyncClient(served.url) as client:
        with pytest.raises(BadInput, match="timeout must be"):
            await client.request("u", ["geb"], timeout=0)
        with pytest.raises(BadInput, match="timeout must be"):
            await client.return_books("u", ["geb"], timeout=float("nan"))
        with pytest.raises(BadInput, match="timeout must be"):
            await client.outcome("r-1", timeout=-1)
    nothing_sent(served)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("u", [1]), "book id must be a str, not int"),
        (("u", [b"x"]), "book id must be a str, not bytes"),
        (("u", 5), "books must be a list of book ids"),
        ((7, ["geb"]), "user id must be a str, not int"),
    ],
)
def test_ids_of_the_wrong_type_are_bad_input(
    redis_server: RedisServer, args: tuple[Any, Any], message: str
) -> None:
    with Client(redis_server.url) as client:
        for call in (client.submit_request, client.submit_return):
            with pytest.raises(BadInput, match=message):
                call(*args)
        with pytest.raises(BadInput, match="request id must be a str"):
            client.submit_request("u", ["geb"], request_id=5)  # type: ignore[arg-type]
        with pytest.raises(BadInput, match="request id must be a str"):
            client.outcome(5)  # type: ignore[arg-type]
        with pytest.raises(BadInput, match="user id must be a str"):
            client.user_books(None)  # type: ignore[arg-type]
        with pytest.raises(BadInput, match="book id must be a str"):
            client.locate(1)  # type: ignore[arg-type]
    nothing_sent(redis_server)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"library": None}, "library must be a str, not NoneType"),
        ({"url": 6379}, "url must be a str"),
        ({"timeout": 0}, "timeout must be a positive number"),
    ],
)
def test_a_client_made_with_the_wrong_type_is_bad_input(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadInput, match=message):
        Client(**kwargs)
    with pytest.raises(BadInput, match=message):
        AsyncClient(**kwargs)
