"""``bookstream-shelving [NAME]``: run one shelving worker."""

from __future__ import annotations

import sys

from bookstream_core.runner import service_main

from bookstream_shelving.service import ShelvingService


def main() -> None:
    sys.exit(
        service_main(
            "shelving",
            ShelvingService,
            "Shelving worker: the main storage. Consumes the shelving inbox, takes books off "
            "the shelves for lending and puts returned books back.",
        )
    )


if __name__ == "__main__":
    main()
