"""``bookstream-lending [NAME]``: run one lending worker."""

from __future__ import annotations

import sys

from bookstream_core.runner import service_main

from bookstream_lending.service import LendingService


def main() -> None:
    sys.exit(
        service_main(
            "lending",
            LendingService,
            "Lending worker: the robotic arm with its automated storage. Consumes the lending "
            "inbox, reserves books, asks shelving for the rest, decides and answers requests.",
        )
    )


if __name__ == "__main__":
    main()
