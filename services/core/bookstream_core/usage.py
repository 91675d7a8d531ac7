"""One format for every line a user reads about a mistake or a failure, whichever program
prints it (``bookstream``, ``bookstream-lending``, ``bookstream-shelving``) and whether the
option parser or the program finds it: ``PROGRAM: error: what happened``, one line."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_USAGE = 2


def error_line(program: str, message: object) -> str:
    return f"{program}: error: {message}"


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake is one line naming the --help to read (argparse would print the
    whole usage first), exit code 2."""

    def error(self, message: str) -> NoReturn:
        program = self.prog.split()[0]  # "bookstream request" is the bookstream command
        sys.stderr.write(error_line(program, f"{message} (see {self.prog} --help)") + "\n")
        sys.exit(EXIT_USAGE)
