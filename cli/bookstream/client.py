"""The Python client: submit requests and returns, wait for their outcomes.

``AsyncClient`` does the work; ``Client`` (``sync.py``) runs it for code that is not
async. ``url=None`` means the embedded Redis (started on first use). What the client
knows of a service's state it asks the service's own read API (its ``views`` module).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import redis.asyncio as aioredis
from bookstream_core.config import ConfigError, RedisSettings, build_redis_settings
from bookstream_core.connection import UNREACHABLE, connect
from bookstream_core.embedded import EmbeddedRedisError
from bookstream_core.events import (
    SCHEMA_VERSION,
    SUBMISSIONS,
    Outcome,
    Submission,
    encode_event,
    submission_digest,
)
from bookstream_core.ids import InvalidId, check_books, check_id, check_request_id, new_request_id
from bookstream_core.keys import InvalidLibraryName, LibraryKeys
from bookstream_core.liveness import served
from bookstream_core.tls import diagnose
from bookstream_lending.functions import LendingFunctions
from bookstream_lending.views import LendingView
from bookstream_shelving.views import ShelvingView
from redis.exceptions import ResponseError

from bookstream.answers import refusal, someone_elses_rejection, stored_outcome
from bookstream.checks import books_of, optional_text, seconds, text
from bookstream.errors import (
    BadInput,
    BookstreamError,
    NoWorker,
    OutcomeTimeout,
    Unknown,
    Unreachable,
)
from bookstream.location import BookLocation, locate
from bookstream.rights import login_error, login_refused, missing_right
from bookstream.unprocessed import mentions
from bookstream.waiter import OutcomeWaiter

#: While waiting, the outcome key is also polled this often, in case a Pub/Sub
#: message was missed (e.g. the connection dropped and came back).
POLL_INTERVAL = 0.5
CONFIRM_WAIT = 1.0


class AsyncClient:
    def __init__(
        self,
        url: str | None = None,
        library: str = "main",
        *,
        user: str | None = None,
        password: str | None = None,
        password_file: str | None = None,
        db: int | None = None,
        home: str | Path | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        settings: RedisSettings | None = None,
        timeout: float = 10.0,
        require_worker: bool = True,
    ) -> None:
        """``timeout``: seconds any one Redis call may take (and the default wait for an
        outcome). ``require_worker``: ``request`` and ``return_books`` raise ``NoWorker``
        at once when no live Lending worker serves the library (False: submit and wait
        anyway, say for a worker that is restarting). ``tls_*``: PEM files for a
        ``rediss://`` URL, as ``--tls-ca`` etc."""
        library = text("library", library)
        timeout = seconds("timeout", timeout)
        try:
            self.keys = LibraryKeys(library)
            if settings is None:
                settings = build_redis_settings(
                    url=optional_text("url", url),
                    user=user,
                    password=password,
                    password_file=password_file,
                    db=db,
                    tls_ca=tls_ca,
                    tls_cert=tls_cert,
                    tls_key=tls_key,
                    home=Path(home).expanduser() if home is not None else None,
                )
        except (InvalidLibraryName, ConfigError) as exc:
            raise BadInput(str(exc)) from None
        self.settings = settings
        self.library = library
        self.timeout = timeout
        self.require_worker = require_worker
        self._r: aioredis.Redis | None = None
        self._waiter: OutcomeWaiter | None = None

    async def redis(self) -> aioredis.Redis:
        """The underlying connection (for inspection commands)."""
        return await self._redis()

    @contextlib.contextmanager
    def redis_errors(self) -> Iterator[None]:
        """Turn a lost connection into ``Unreachable``, naming the Redis (exit code 3)."""
        try:
            yield
        except (BookstreamError, BrokenPipeError):
            # Ours already (OutcomeTimeout is an OSError too); a broken pipe is our own
            # stdout closed (redis-py reports its sockets' errors as ConnectionError).
            raise
        except UNREACHABLE as exc:
            if (login := login_error(exc)) is not None:  # Redis was reached: not unreachable
                raise Unreachable(login_refused(login, self.settings)) from None
            if "DB index is out of range" in str(exc):  # SELECT failed: a bad --db
                raise BadInput(
                    f"Redis at {self.settings.describe()} has no database {self.settings.db}"
                ) from None
            raise Unreachable(
                diagnose(exc, self.settings)
                or f"cannot reach Redis at {self.settings.describe()}: {exc}"
            ) from None
        except ResponseError as exc:
            # Redis refused (out of memory, an inbox out of ids, a missing right): nothing
            # was submitted; the same request id may be submitted again once it passes.
            raise Unreachable(
                missing_right(exc, self.settings, self.library)
                or f"Redis at {self.settings.describe()} refused: {exc}"
            ) from None

    async def _redis(self) -> aioredis.Redis:
        if self._r is None:
            try:
                self._r = connect(
                    self.settings, client_name="bookstream-client", timeout=self.timeout
                )
            except ConfigError as exc:  # BOOKSTREAM_HOME no directory of ours (exit 2)
                raise BadInput(str(exc)) from None
            except EmbeddedRedisError as exc:
                raise Unreachable(str(exc)) from None
        return self._r

    async def aclose(self) -> None:
        if self._waiter is not None:
            await self._waiter.aclose()
            self._waiter = None
        if self._r is not None:
            await self._r.aclose()
            self._r = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ submitting

    @staticmethod
    def check_request(user: str, books: Iterable[str], request_id: str | None) -> None:
        """Raise ``BadInput`` unless the ids are within bounds."""
        try:
            check_id("user id", text("user id", user))
            check_books(books_of(books))
            if (rid := optional_text("request id", request_id)) is not None:
                check_request_id(rid)
        except InvalidId as exc:
            raise BadInput(str(exc)) from None

    def _event(
        self, kind: str, user: str, books: Iterable[str], request_id: str | None
    ) -> Submission:
        books = books_of(books)
        self.check_request(user, books, request_id)
        rid = request_id if request_id is not None else new_request_id()
        return SUBMISSIONS[kind](v=SCHEMA_VERSION, id=rid, user=user, books=books)

    async def _check_served(self) -> None:
        """Waiting for an outcome nobody would give is a newcomer's first trap."""
        if not await served(await self._redis(), self.keys, "lending"):
            raise NoWorker(self.library)

    async def _submit(self, event: Submission) -> str:
        """Through the door (bs1_submit), never a raw RPUSH: it validates the event again
        and refuses an id Lending recorded for another user. Returns the submission's
        digest (a rejection names it: events.submission_digest)."""
        door = LendingFunctions(await self._redis(), self.keys)
        payload = encode_event(event)
        # BSENV is Redis's trouble (a key of the wrong type, a right missing): retried
        # until timeout, as a passing one may mend.
        deadline = time.monotonic() + self.timeout
        delay, loaded = 0.05, False
        with self.redis_errors():
            while True:
                try:
                    await door.submit(payload)
                    return submission_digest(payload)
                except ResponseError as exc:
                    if "Function not found" in str(exc) and not loaded:
                        await door.load()  # a Redis no worker has prepared yet
                        loaded = True
                        continue
                    if not str(exc).startswith("BSENV") or time.monotonic() + delay > deadline:
                        raise refusal(exc, event.id) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def submit_request(
        self, user: str, books: Iterable[str], *, request_id: str | None = None
    ) -> str:
        """Submit without waiting; returns the request id (pass it to ``outcome``)."""
        event = self._event("request", user, books, request_id)
        await self._submit(event)
        return event.id

    async def submit_return(
        self, user: str, books: Iterable[str], *, request_id: str | None = None
    ) -> str:
        event = self._event("return", user, books, request_id)
        await self._submit(event)
        return event.id

    async def request(
        self,
        user: str,
        books: Iterable[str],
        *,
        request_id: str | None = None,
        timeout: float = 10.0,
    ) -> Outcome:
        """Ask for books and wait (at most ``timeout`` s) for the outcome."""
        timeout = seconds("timeout", timeout)
        return await self._round_trip(self._event("request", user, books, request_id), timeout)

    async def return_books(
        self,
        user: str,
        books: Iterable[str],
        *,
        request_id: str | None = None,
        timeout: float = 10.0,
    ) -> Outcome:
        """Bring books back and wait (at most ``timeout`` s) for the outcome."""
        timeout = seconds("timeout", timeout)
        return await self._round_trip(self._event("return", user, books, request_id), timeout)

    async def _round_trip(self, event: Submission, timeout: float) -> Outcome:
        # Subscribe before submitting so that the announcement cannot be missed.
        return await self._wait(event.id, timeout, submit=event)

    async def outcome(self, request_id: str, timeout: float = 10.0) -> Outcome:
        """Wait (at most ``timeout`` s) for the outcome of a submitted request; ``Unknown``
        when nobody submitted it (or its outcome expired after the retention)."""
        timeout = seconds("timeout", timeout)
        try:
            check_request_id(text("request id", request_id))
        except InvalidId as exc:
            raise BadInput(str(exc)) from None
        r = await self._redis()
        with self.redis_errors():
            if not await self._known(r, request_id):
                raise Unknown(request_id)
        return await self._wait(request_id, timeout, submit=None)

    async def _rejection_to_wait_past(
        self, r: aioredis.Redis, found: Outcome | None, request_id: str
    ) -> bool:
        """Asked later (after --no-wait), a rejection may be of another, malformed entry
        with this id: an entry with it still ahead of the workers will replace it."""
        return (
            found is not None
            and found.status == "rejected"
            and await mentions(r, self.keys, request_id)
        )

    async def _known(self, r: aioredis.Redis, request_id: str) -> bool:
        """Whether the id was submitted and not forgotten. A request moves, each step
        atomic, from the inbox to in flight (waiting for Shelving) to answered; looking in
        that order, a request that moves while we look is found in its next place."""
        key = self.keys.outcome(request_id)
        return (
            bool(await r.exists(key))
            or await mentions(r, self.keys, request_id)
            or await LendingView(r, self.keys).in_flight(request_id)
            or bool(await r.exists(key))
        )

    async def _wait(self, request_id: str, timeout: float, submit: Submission | None) -> Outcome:
        r = await self._redis()
        if self._waiter is None:
            self._waiter = OutcomeWaiter(r)
        key = self.keys.outcome(request_id)
        deadline = time.monotonic() + timeout
        future: asyncio.Future[bytes] | None = None
        superseded: bytes | str | None = None
        with self.redis_errors():
            try:
                future, confirmed = await self._waiter.register(key)
                # Pub/Sub only makes the answer fast; polling the key makes it certain. A
                # subscription not confirmed in time (the connection just came back, say)
                # leaves the wait to the polling.
                with contextlib.suppress(TimeoutError, *UNREACHABLE):
                    await asyncio.wait_for(asyncio.shield(confirmed), min(timeout, CONFIRM_WAIT))
                existing = await r.get(key)
                found = stored_outcome(existing, request_id, submit)
                if submit is None and await self._rejection_to_wait_past(r, found, request_id):
                    superseded, found = existing, None
                if found is not None and (found.status != "rejected" or submit is None):
                    return found
                # A rejection applied nothing: resubmitted, the event replaces it.
                if found is not None:
                    superseded = existing
                if submit is not None and self.require_worker:
                    await self._check_served()
                mine = await self._submit(submit) if submit is not None else None
                woken = False
                while (left := deadline - time.monotonic()) > 0:
                    if woken or (future.done() and future.exception() is not None):
                        await asyncio.sleep(min(left, POLL_INTERVAL))  # poll from now on
                    else:
                        # The message only wakes us: anyone may PUBLISH on the channel, so
                        # the outcome is the one stored, read back and checked.
                        with contextlib.suppress(TimeoutError, *UNREACHABLE):
                            await asyncio.wait_for(asyncio.shield(future), min(left, POLL_INTERVAL))
                            woken = True
                    stored = await r.get(key)
                    found = (
                        None if stored == superseded else stored_outcome(stored, request_id, submit)
                    )
                    if someone_elses_rejection(found, mine) or (
                        submit is None and await self._rejection_to_wait_past(r, found, request_id)
                    ):
                        # Another entry with our id was malformed and set aside; ours is
                        # valid, and its outcome will replace that rejection.
                        superseded, found = stored, None
                    if found is not None:
                        return found
            except TimeoutError:
                pass
            finally:
                if future is not None:
                    await self._waiter.release(key, future)
        raise OutcomeTimeout(request_id, timeout, self.library)

    # ------------------------------------------------------------------ looking up

    async def user_books(self, user: str) -> list[str]:
        """The books lent to ``user``, sorted."""
        try:
            check_id("user id", text("user id", user))
        except InvalidId as exc:
            raise BadInput(str(exc)) from None
        r = await self._redis()
        with self.redis_errors():
            return await LendingView(r, self.keys).user_books(user)

    async def locate(self, book: str) -> BookLocation:
        """Where the book is: on the shelf, in storage, lent to whom, in transit..."""
        try:
            check_id("book id", text("book id", book))
        except InvalidId as exc:
            raise BadInput(str(exc)) from None
        r = await self._redis()
        with self.redis_errors():
            return await locate(LendingView(r, self.keys), ShelvingView(r, self.keys), book)
