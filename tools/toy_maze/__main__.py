"""CLI: `python -m tools.toy_maze --output_dir=DIR [--seed=0 ...]` runs the comparison, prints a table, writes PNGs.

Flags mirror `experiment.Config`. They are defined on a given FlagValues (the global one only when run as
a program), so tests can parse them in-process without clashing with other tools' flags.
"""

import dataclasses
import functools
import os
import pathlib
import sys
from typing import Sequence

from absl import flags

from iql_tf import cli
from iql_tf.errors import UserError
from tools.toy_maze import experiment, figures

_DEFINE = {int: flags.DEFINE_integer, float: flags.DEFINE_float}


def define_flags(flag_values: flags.FlagValues) -> None:
    """--output_dir plus one flag per Config field, with the field's default and help."""
    flags.DEFINE_string("output_dir", None, "Folder for the PNG heat maps (created if missing).", flag_values=flag_values)
    for field in dataclasses.fields(experiment.Config):
        _DEFINE[field.type](field.name, field.default, field.metadata["help"], flag_values=flag_values)


def _output_dir(path: str | None) -> pathlib.Path:
    """Creates the folder, or explains in one line why it cannot be used."""
    if not path:
        raise UserError("--output_dir is required: the folder to write the PNG heat maps to")
    folder = pathlib.Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--output_dir={path} cannot be created ({error.strerror}): choose another folder") from error
    if not os.access(folder, os.W_OK):
        raise UserError(f"--output_dir={path} is not writable: choose another folder")
    return folder


def _table(results: experiment.Results) -> str:
    data = results.dataset
    reached = int(data.terminals[data.trajectory_ids > 0].sum())
    lines = [
        f"dataset: {len(data)} transitions, 1 optimal + {data.trajectory_ids.max()} random trajectories"
        f" ({reached} of the random ones reach the goal)",
        f"{'method':<10} {'corr(V, V*)':>11} {'MAE':>6} {'success':>8}",
    ]
    lines += [f"{m.name:<10} {m.correlation:>11.3f} {m.mae:>6.2f} {m.success:>8.0%}" for m in results.methods]
    return "\n".join(lines)


def main(argv: Sequence[str], flag_values: flags.FlagValues) -> None:
    """Validates the flags, runs the comparison, prints the table and writes the figures."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {' '.join(argv[1:])}: every setting is a --flag")
    config = experiment.Config(**{f.name: flag_values[f.name].value for f in dataclasses.fields(experiment.Config)})
    output_dir = _output_dir(flag_values.output_dir)
    results = experiment.run(config)
    print(_table(results))
    for path in figures.write_figures(results, output_dir).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    cli.run(functools.partial(main, flag_values=flags.FLAGS), sys.modules[__name__])
