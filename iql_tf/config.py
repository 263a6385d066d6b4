"""Gin configuration: the packaged config files, the two gin flags every training command takes, parsing.

The configs live in the repository's `gin/` folder and install as the data package `iql_tf.configs` (plain
and editable installs alike), so `--gin_file=locomotion` works from any directory. A file given by path is
read as is; its `include 'base.gin'` lines resolve against the packaged folder too.
"""

import importlib.resources
import logging
import os
import pathlib
import tokenize
from typing import List, Sequence

import gin
from absl import flags

from iql_tf.errors import UserError


def configs_dir() -> pathlib.Path:
    """The packaged gin files' folder: iql_tf/configs/ of an installed wheel (setup.py maps gin/ there), or
    the checkout's gin/ beside the package in an editable install (which imports iql_tf from the checkout)."""
    installed = pathlib.Path(str(importlib.resources.files("iql_tf"))) / "configs"
    return installed if (installed / "base.gin").is_file() else pathlib.Path(__file__).resolve().parents[1] / "gin"


def available_configs() -> List[str]:
    return sorted(path.stem for path in configs_dir().glob("*.gin"))


def define_gin_flags() -> None:
    """--gin_file and --gin_bindings, the configuration flags of every command that trains."""
    flags.DEFINE_multi_string("gin_file", [], "Gin config, repeatable, applied in order: a packaged name "
                              f"({', '.join(available_configs())}) or a path to a .gin file.")
    flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings applied after the files, e.g. 'train.seed = 1'.")


def resolve_gin_file(name: str) -> str:
    """A gin file as given if it exists; else a bare name (`locomotion`, `locomotion.gin`) or the repository's
    `gin/NAME.gin` names the packaged config. Any other path that does not exist is an error, never a stock
    config in its place."""
    path = pathlib.Path(name).expanduser()
    if path.is_file():
        return str(path)
    if str(path.parent) not in (".", "gin"):
        raise UserError(f"gin file {name!r} not found; check the path (packaged configs go by name: "
                        f"{', '.join(available_configs())})")
    packaged = configs_dir() / (path.name if path.suffix == ".gin" else path.name + ".gin")
    if packaged.is_file():
        return str(packaged)
    raise UserError(f"gin file {name!r} not found (neither a file nor a packaged config); packaged configs: "
                    f"{', '.join(available_configs())}")


def _not_gin_probing(record: logging.LogRecord) -> bool:
    """gin looks for an included file under each search path in turn and logs (an ERROR where it is not, the
    working directory first); only the final 'Unable to open file', raised as an exception, matters."""
    return not record.pathname.endswith(f"gin{os.sep}resource_reader.py")


def parse_gin(files: Sequence[str], bindings: Sequence[str]) -> None:
    """Parses gin files then bindings; unknown configurables or parameters and syntax errors are UserErrors."""
    import iql_tf.settings  # noqa: F401  (defines the configurables: make_dataset, IQLAgent, train)

    gin.add_config_file_search_path(str(configs_dir()))  # `include 'base.gin'` from any working directory
    if _not_gin_probing not in logging.getLogger().filters:
        logging.getLogger().addFilter(_not_gin_probing)
    paths = [resolve_gin_file(name) for name in files]
    try:
        gin.parse_config_files_and_bindings(paths, bindings)
    except (ValueError, KeyError, SyntaxError, TypeError, OSError, tokenize.TokenError) as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise UserError(f"gin config: {message}; check the gin files and --gin_bindings") from error


def config_name(files: Sequence[str]) -> str:
    """A short name for a run's configuration: the stem of its last gin file ('default' without one)."""
    return pathlib.Path(files[-1]).stem if files else "default"
