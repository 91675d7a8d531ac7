"""bookstream's shared runtime: what both services, the CLI and the operator share."""

from bookstream_core.events import SCHEMA_VERSION, Outcome

__all__ = ["SCHEMA_VERSION", "Outcome"]
