"""Gin parsing for the command line, and saving the operative config beside a run."""

import os
import pathlib
from typing import Any, Dict, Sequence

import logging as std_logging

import gin
import tensorflow as tf
from absl import flags
from absl import logging

from iql_tf.errors import UserError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
GIN_DIR = REPO_ROOT / "gin"


def define_gin_flags() -> None:
    """--gin_file and --gin_bindings, the only configuration flags of every command that trains."""
    flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order (e.g. gin/locomotion.gin).")
    flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings applied after the files, e.g. 'train.seed = 1'.")


def quiet_tensorflow_info() -> None:
    """Drops TensorFlow's own INFO lines (saver and SavedModel internals) that drown a run's progress;
    warnings and errors still show, and so does this project's INFO logging."""
    tf.get_logger().setLevel("WARNING")
    logging.get_absl_handler().addFilter(
        lambda record: record.levelno >= std_logging.WARNING or "/tensorflow/" not in record.pathname
    )


def resolve_gin_file(name: str) -> str:
    """A gin file as given, or relative to the repository (`gin/x.gin`), or by short name (`x`)."""
    for candidate in (pathlib.Path(name), REPO_ROOT / name, GIN_DIR / name, GIN_DIR / f"{name}.gin"):
        if candidate.is_file():
            return str(candidate)
    available = ", ".join(sorted(path.name for path in GIN_DIR.glob("*.gin")))
    raise UserError(f"gin file {name!r} not found (looked in ., {REPO_ROOT} and {GIN_DIR}); available: {available}")


def parse_gin(files: Sequence[str], bindings: Sequence[str]) -> None:
    """Parses gin files then bindings; unknown configurables or parameters are UserErrors."""
    # Domain files `include 'gin/base.gin'`: make that resolve from any working directory.
    gin.add_config_file_search_path(str(REPO_ROOT))
    try:
        gin.parse_config_files_and_bindings([resolve_gin_file(name) for name in files], bindings)
    except (ValueError, KeyError, SyntaxError, TypeError, OSError) as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise UserError(f"gin config: {message}; check the gin files and --gin_bindings") from error


def save_operative_config(workdir: str, writer: tf.summary.SummaryWriter, extra: Dict[str, Any]) -> None:
    """Writes the gin config actually used to DIR/operative_config.gin and to TensorBoard as text."""
    operative = gin.operative_config_str()
    with open(os.path.join(workdir, "operative_config.gin"), "w") as f:
        f.write(operative)
    details = "\n".join(f"- {key}: `{value}`" for key, value in extra.items())
    with writer.as_default(step=0):
        tf.summary.text("config/gin", f"```\n{operative}\n```")
        tf.summary.text("config/data", details)
