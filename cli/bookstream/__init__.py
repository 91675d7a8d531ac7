"""bookstream: request and return books, and run the library locally.

>>> from bookstream import Client
>>> with Client() as client:            # the embedded Redis
...     outcome = client.request("user1", ["geb"])
"""

from bookstream_core.events import Outcome, Unavailable

from bookstream.client import AsyncClient
from bookstream.errors import (
    BadInput,
    BookstreamError,
    NoWorker,
    OutcomeTimeout,
    Unknown,
    Unreachable,
)
from bookstream.location import BookLocation
from bookstream.sync import Client, ClientClosed

__all__ = [
    "AsyncClient",
    "BadInput",
    "BookLocation",
    "BookstreamError",
    "Client",
    "ClientClosed",
    "NoWorker",
    "Outcome",
    "OutcomeTimeout",
    "Unavailable",
    "Unknown",
    "Unreachable",
]
