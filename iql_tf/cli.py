"""Running a command-line entry point the same way for every command of the project.

- `--help` (or `-h`, `--helpshort`) prints the command's description and its own flags and exits 0;
  `--helpfull` lists every flag. Neither imports TensorFlow: commands import it inside `main`.
- A malformed flag, or an expected mistake (`UserError`) raised by `main`, is printed as one line
  `error: ...` on stderr with exit status 2, never as a traceback.
- Ctrl-C outside training (which saves and exits itself) ends with one line and status 130.
- TensorFlow's native start-up lines never reach the terminal (`quiet.filter_native_stderr`).
"""

import sys
import types
from typing import Callable, List, Sequence

from absl import app, flags

from iql_tf import quiet
from iql_tf.errors import UserError

FLAGS = flags.FLAGS
_HELP = ("--help", "-h", "--helpshort", "-?", "--help=true")


def run(main: Callable[[Sequence[str]], None], module: types.ModuleType) -> None:
    """Parses the flags and runs `main(argv)` (the command's flags are those `module` defined)."""
    quiet.filter_native_stderr()

    def parse(argv: List[str]) -> List[str]:
        if any(arg in _HELP for arg in argv[1:]):
            print(help_text(module, argv[0]))
            sys.exit(0)
        if "--helpfull" in argv[1:]:
            app.usage(writeto_stdout=True)
            sys.exit(0)
        try:
            return FLAGS(argv)
        except flags.Error as error:
            _fail(f"{str(error).splitlines()[0]} (see --help)")

    app.run(one_line_errors(main), flags_parser=parse)


def one_line_errors(main: Callable[[Sequence[str]], None]) -> Callable[[Sequence[str]], None]:
    """`main` with expected mistakes printed as one line (exit status 2) and Ctrl-C as one line (130)."""

    def guarded(argv: Sequence[str]) -> None:
        try:
            main(argv)
        except UserError as error:
            # gin appends "In call to configurable ..." lines to exceptions raised inside configurables.
            _fail(str(error).splitlines()[0])
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return guarded


def help_text(module: types.ModuleType, program: str) -> str:
    """The module's docstring and the flags it defined (under its name, or the script's when run as __main__)."""
    options = "\n".join(text for text in (FLAGS.module_help(program), FLAGS.module_help(module.__name__)) if text)
    return f"{(module.__doc__ or '').strip()}\n\nflags:\n{options}\n\nAll flags: --helpfull."


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
