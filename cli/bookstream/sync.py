"""``Client``: the ``AsyncClient``'s methods, blocking, for code that is not async.

One client may be shared by many threads (a web application's worker pool): it runs
one ``AsyncClient`` on an event loop of its own, in a thread of its own, and every call
is handed to that loop. The calls of all threads then share one connection pool and
one Pub/Sub connection, exactly as concurrent tasks of an async program do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from bookstream_core.events import Outcome

from bookstream.client import AsyncClient
from bookstream.errors import BookstreamError
from bookstream.location import BookLocation

T = TypeVar("T")


class ClientClosed(BookstreamError, RuntimeError):
    """The client was closed; make a new one."""


class Client:
    """The same methods as ``AsyncClient``, blocking; safe to share between threads."""

    def __init__(self, url: str | None = None, library: str = "main", **kwargs: Any) -> None:
        self._async = AsyncClient(url, library, **kwargs)
        self._loop = asyncio.new_event_loop()
        # A daemon thread: a client nobody closed does not keep the program alive.
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bookstream-client", daemon=True
        )
        self._thread.start()
        self._lock = threading.Lock()
        self._closed = False
        #: Calls under way, failed with ClientClosed by ``close`` (never left waiting).
        self._pending: set[concurrent.futures.Future[Any]] = set()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._closed:
                coro.close()
                raise ClientClosed("this bookstream Client is closed")
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            self._pending.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise ClientClosed("this bookstream Client was closed during the call") from None
            raise
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting: stop the call too
            raise
        finally:
            with self._lock:
                self._pending.discard(future)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending)
        # Calls other threads still wait on end now, with ClientClosed (newcomer: a web
        # application's shutdown closed the client and its workers hung for ever).
        for future in pending:
            future.cancel()
        asyncio.run_coroutine_threadsafe(self._async.aclose(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def request(
        self,
        user: str,
        books: Iterable[str],
        *,
        request_id: str | None = None,
        timeout: float = 10.0,
    ) -> Outcome:
        return self._run(self._async.request(user, books, request_id=request_id, timeout=timeout))

    def return_books(
        self,
        user: str,
        books: Iterable[str],
        *,
        request_id: str | None = None,
        timeout: float = 10.0,
    ) -> Outcome:
        return self._run(
            self._async.return_books(user, books, request_id=request_id, timeout=timeout)
        )

    def submit_request(
        self, user: str, books: Iterable[str], *, request_id: str | None = None
    ) -> str:
        return self._run(self._async.submit_request(user, books, request_id=request_id))

    def submit_return(
        self, user: str, books: Iterable[str], *, request_id: str | None = None
    ) -> str:
        return self._run(self._async.submit_return(user, books, request_id=request_id))

    def outcome(self, request_id: str, timeout: float = 10.0) -> Outcome:
        return self._run(self._async.outcome(request_id, timeout))

    def user_books(self, user: str) -> list[str]:
        return self._run(self._async.user_books(user))

    def locate(self, book: str) -> BookLocation:
        return self._run(self._async.locate(book))
