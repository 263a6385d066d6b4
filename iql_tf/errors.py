"""One exception type for expected user mistakes, and the CLI wrapper that prints it as one line."""

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """An expected mistake (bad file, bad flag, bad data): the message says what, where and how to fix it."""


def is_integer(value) -> bool:
    """An int from a gin file or flag (bools excluded: gin reads True as a bool, not as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or float from a gin file or flag (bools and quoted strings excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_main(main: Callable[[Sequence[str]], None]) -> Callable[[Sequence[str]], None]:
    """Wraps an absl `main` so that a UserError exits with one line on stderr and status 2."""

    def wrapped(argv: Sequence[str]) -> None:
        try:
            main(argv)
        except UserError as error:
            # gin appends "In call to configurable ..." lines to exceptions raised inside configurables.
            print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)

    return wrapped
