"""`setup`: FQL's code at the pinned commit in ROOT/fql, and a venv for it in ROOT/venv (each step skipped when done).

FQL's code is never committed here: it is cloned from `--fql_source` (its GitHub URL, or a local clone or bare
repository) and checked out at PIN, detached. The venv gets requirements.txt beside this file; its copy in the
venv (MARKER) says the install finished, so an interrupted install is redone, and a changed pin list reinstalls.
"""

import dataclasses
import pathlib
import shutil
import subprocess
from typing import List, Sequence

from iql_tf.errors import UserError

PIN = "719d04417cb0b206deddbc7d761b3e710c3d750c"
DEFAULT_SOURCE = "https://github.com/seohongpark/fql"
REQUIREMENTS = pathlib.Path(__file__).with_name("requirements.txt")
MARKER = "fql_peer_requirements.txt"
FREEZE = "fql_peer_freeze.txt"


@dataclasses.dataclass(frozen=True)
class Layout:
    """The peer's folders under ROOT (default .peer, ignored by git)."""

    root: pathlib.Path

    @property
    def fql(self) -> pathlib.Path:
        return self.root / "fql"

    @property
    def venv(self) -> pathlib.Path:
        return self.root / "venv"

    @property
    def python(self) -> pathlib.Path:
        return self.venv / "bin" / "python"


def git(args: Sequence[str], cwd: pathlib.Path = None) -> str:
    """git's stdout; a failure is one line with git's own last message."""
    if shutil.which("git") is None:
        raise UserError("git is not installed: install it (apt-get install git) to fetch FQL's code")
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
        raise UserError(f"git {' '.join(args)}: {lines[-1].strip()}")
    return done.stdout.strip()


def source_argument(source: str) -> str:
    """A local path made absolute (git clones it as it would a URL); anything else is a URL, as given."""
    path = pathlib.Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def checkout(source: str, fql: pathlib.Path) -> str:
    """Clones `source` into `fql` (if needed) and checks out PIN; says what it did."""
    if (fql / ".git").exists():
        if git(["rev-parse", "HEAD"], fql) == PIN:
            return f"FQL already checked out at {PIN[:7]} in {fql}"
        if subprocess.run(["git", "cat-file", "-e", f"{PIN}^{{commit}}"], cwd=fql, capture_output=True).returncode:
            git(["fetch", "--quiet", source_argument(source)], fql)
        git(["checkout", "--quiet", "--detach", PIN], fql)
        return f"FQL switched to {PIN[:7]} in {fql}"
    if fql.exists() and any(fql.iterdir()):
        raise UserError(f"{fql} exists but is not a git clone: move it aside, then run setup again")
    fql.parent.mkdir(parents=True, exist_ok=True)
    git(["clone", "--quiet", "--no-checkout", source_argument(source), str(fql)])
    try:
        git(["checkout", "--quiet", "--detach", PIN], fql)
    except UserError as error:
        raise UserError(f"{source} has no commit {PIN[:7]} ({error}): give --fql_source a clone that has it") from error
    return f"FQL cloned from {source} and checked out at {PIN[:7]} in {fql}"


def check_checkout(fql: pathlib.Path) -> None:
    """The peer runs FQL's own code: PIN, unmodified (a local edit would no longer be FQL's)."""
    if not (fql / "main.py").is_file():
        raise UserError(f"no FQL checkout in {fql}: run `python -m tools.fql_peer setup` first")
    head = git(["rev-parse", "HEAD"], fql)
    if head != PIN:
        raise UserError(f"{fql} is at {head[:7]}, not the pinned {PIN[:7]}: run `python -m tools.fql_peer setup`")
    changed = git(["status", "--porcelain", "--untracked-files=no"], fql)
    if changed:
        raise UserError(f"{fql} has local changes ({changed.splitlines()[0].strip()}, ...): undo them with "
                        f"`git -C {fql} checkout .` so that the peer runs FQL's code as published")


def installed(layout: Layout) -> bool:
    marker = layout.venv / MARKER
    return layout.python.exists() and marker.is_file() and marker.read_text() == REQUIREMENTS.read_text()


def check_installed(layout: Layout) -> None:
    if not installed(layout):
        raise UserError(f"the peer's venv {layout.venv} is missing or incomplete: run `python -m tools.fql_peer setup`")


def _stream(command: List[str], cwd: pathlib.Path = None) -> None:
    """Runs `command` with its output on the terminal; a failure is one line naming it."""
    code = subprocess.run(command, cwd=cwd).returncode
    if code:
        raise UserError(f"`{' '.join(command)}` failed (exit status {code}): see its output above")


def make_venv(layout: Layout, python: str) -> str:
    """Creates the venv and installs the pins, unless a finished install of the same pins is there."""
    if installed(layout):
        return f"venv {layout.venv} already has the pinned packages"
    if not layout.python.exists():
        if shutil.which(python) is None:
            raise UserError(f"--python={python} is not on PATH: name a Python 3.11 interpreter")
        print(f"creating the venv {layout.venv} with {python}", flush=True)
        _stream([python, "-m", "venv", str(layout.venv)])
    print(f"installing {REQUIREMENTS} into {layout.venv}", flush=True)
    _stream([str(layout.python), "-m", "pip", "install", "--disable-pip-version-check", "-r", str(REQUIREMENTS)])
    print("checking that FQL's main.py imports (its agents, envs, utils) in the venv", flush=True)
    _stream([str(layout.python), "-c", "import main"], cwd=layout.fql)
    freeze = subprocess.run([str(layout.python), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    (layout.venv / FREEZE).write_text(freeze)
    (layout.venv / MARKER).write_text(REQUIREMENTS.read_text())
    return f"venv {layout.venv} ready (every installed version in {layout.venv / FREEZE})"


def setup(source: str, root: pathlib.Path, python: str) -> None:
    layout = Layout(root)
    print(f"[1/2] {checkout(source, layout.fql)}", flush=True)
    check_checkout(layout.fql)
    print(f"[2/2] {make_venv(layout, python)}", flush=True)
