"""Fixtures for the operator tests.

pytest-asyncio (1.5) asks ``asyncio.get_event_loop()`` for the "previous" loop before
each async test; when no loop was ever set, Python 3.11 creates one there that nobody
closes, and its ResourceWarning fails a later test (warnings are errors). Declaring
"no current loop" once makes that call raise instead, which pytest-asyncio expects.
"""

from __future__ import annotations

import asyncio

asyncio.set_event_loop(None)
