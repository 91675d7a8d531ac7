"""Shelving's own keys (mirrored in shelving.lua). Only shelving writes them."""

from __future__ import annotations

from dataclasses import dataclass

from bookstream_core.keys import LibraryKeys


@dataclass(frozen=True, slots=True)
class ShelvingKeys:
    library: LibraryKeys

    @property
    def off_shelf(self) -> str:
        """Hash book -> how many times it is off the shelf (absent: on the shelf)."""
        return f"{self.library.prefix}shelving:off"
