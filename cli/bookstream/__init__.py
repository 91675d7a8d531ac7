"""bookstream: request and return books, and run the library locally.

>>> from bookstream import Client
>>> with Client() as client:            # the embedded Redis
...     outcome = client.request("user1", ["geb"])
"""

from bookstream_core.events import Outcome, Unavailable

from bookstream.client import AsyncClient, Client
from bookstream.errors import BadInput, BookstreamError, OutcomeTimeout, Unreachable
from bookstream.location import BookLocation

__all__ = [
    "AsyncClient",
    "BadInput",
    "BookLocation",
    "BookstreamError",
    "Client",
    "Outcome",
    "OutcomeTimeout",
    "Unavailable",
    "Unreachable",
]
