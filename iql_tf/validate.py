"""Check a dataset before training on it: `python -m iql_tf.validate SOURCE` (or `iql-validate SOURCE`).

SOURCE is a D4RL-style .npz / .hdf5 / .h5 file, a .csv / .parquet table (--columns maps its columns), a
Minari id in the local Minari root, an OGBench single-task name (`ogbench:NAME`, from --ogbench_dir), or a
converted directory. Lists every problem at once (not only the first,
as conversion and training do), each with the field, how many rows it affects and the first of them, then a
summary: transitions, trajectories, terminals and truncations, reward and action ranges, observation
statistics, the evaluation environment, and notes on what to set for training. Exit status 0 when the dataset
is usable, 1 when it has problems (2 for a malformed command).

    python -m iql_tf.validate data/pendulum.npz --env_id=Pendulum-v1
    python -m iql_tf.validate data/robot.npz --action_bounds=-2,2
    python -m iql_tf.validate data/log.csv --columns='{"rewards": "reward", "observations": ["x", "v"]}'
"""

import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from absl import flags

from iql_tf import cli, json_records
from iql_tf.errors import UserError

FLAGS = flags.FLAGS
_SHOWN_PROBLEMS = 50
# Observation dimensions whose std differ by more than this factor: the small ones barely reach the networks
# unless observations are normalised.
_STD_SPREAD = 100.0


def define_flags() -> None:
    flags.DEFINE_string("env_id", None, "The environment the data was collected in (npz / HDF5 files name none).")
    flags.DEFINE_string("env_kwargs", "{}", "JSON object of kwargs for --env_id.")
    flags.DEFINE_string("action_bounds", None, "LOW,HIGH of the actions of a file that names no environment.")
    flags.DEFINE_bool("download", False, "Allow Minari (or OGBench) to download a dataset that is not local.")
    flags.DEFINE_string("ogbench_dir", None, "ogbench:NAME sources: the folder of OGBench's files (default "
                        "~/.ogbench/data).")
    flags.DEFINE_string("columns", None, "JSON object: which columns of a .csv / .parquet table hold each field, "
                        "e.g. '{\"rewards\": \"reward\", \"observations\": [\"x\", \"v\"]}' (make_dataset.columns).")


def parse_columns(text: Optional[str]) -> Optional[Dict[str, Any]]:
    """--columns='{"rewards": "reward"}'."""
    if not text:
        return None
    return json_records.parse_json_object(text, "--columns", "give a JSON object of field -> column name(s), e.g. "
                                          "--columns='{\"rewards\": \"reward\"}'")


def validate(source: Any, env_id: Optional[str] = None, env_kwargs: Optional[Dict[str, Any]] = None,
             action_bounds=None, download: bool = False, columns: Optional[Dict[str, Any]] = None,
             ogbench_dir: Optional[str] = None) -> Dict[str, Any]:
    """{"problems": [one line each], "summary": {...} or None, "notes": [one line each]}; `source` as
    make_dataset takes it (in-memory sources too)."""
    from iql_tf.data import sources, validation

    resolved = sources.resolve(source, download, columns=columns, ogbench_dir=ogbench_dir)
    if resolved.kind == sources.GENERATED:
        raise UserError(f"{source}: one of the project's generated datasets, not generated yet: training or "
                        f"converting it generates it (python -m iql_tf.generate --dataset_id={source})")
    if resolved.kind == sources.CONVERTED:
        return _validate_converted(resolved.path)
    report = validation.Report()
    try:
        data = sources.read(resolved, report, env_id, env_kwargs, action_bounds)
    except UserError as error:  # unreadable, or spaces that rule the data out: nothing more to check
        return {"problems": [problem.line() for problem in report.problems] + [str(error)], "summary": None,
                "notes": []}
    problems = [problem.line() for problem in report.problems]
    if data is None:
        return {"problems": problems, "summary": None, "notes": []}
    return _result(problems, data.transitions, data.num_episodes, data.action_low, data.action_high, data.env_id,
                   data.ref_min_score, data.ref_max_score)


def _validate_converted(directory) -> Dict[str, Any]:
    """A converted directory: its shards against metadata.json (checksums, counts, shapes), then the summary."""
    from iql_tf.data.pipeline import load_converted

    try:
        tensors, metadata = load_converted(directory)
    except UserError as error:
        return {"problems": [str(error)], "summary": None, "notes": []}
    arrays = {key: value.numpy() for key, value in tensors.items()}
    return _result([], arrays, metadata.num_episodes, np.asarray(metadata.action_low),
                   np.asarray(metadata.action_high), metadata.env_id, metadata.ref_min_score, metadata.ref_max_score)


def _result(problems: List[str], transitions: Dict[str, np.ndarray], episodes: int, action_low: np.ndarray,
            action_high: np.ndarray, env_id: Optional[str], ref_min: Optional[float], ref_max: Optional[float]
            ) -> Dict[str, Any]:
    return {"problems": problems,
            "summary": _summary(transitions, episodes, action_low, action_high, env_id, ref_min, ref_max),
            "notes": _notes(transitions, env_id)}


def _is_goal_reaching(env_id: Optional[str]) -> bool:
    """Maze tasks (AntMaze, PointMaze): reward 1 where the goal is reached."""
    return bool(env_id) and "Maze" in env_id


def _notes(transitions: Dict[str, np.ndarray], env_id: Optional[str]) -> List[str]:
    """Advice that is no problem: the dataset trains as it is, but better with a setting, or a caveat."""
    notes = []
    std = transitions["observations"].std(0)
    varying = std[std > 0]  # constant dimensions are listed in the summary
    if varying.size and varying.max() > _STD_SPREAD * varying.min():
        notes.append(f"observation std differs {varying.max() / varying.min():.0f}x over dimensions "
                     f"({varying.min():.3g} to {varying.max():.4g}): set make_dataset.normalize_observations = True "
                     "so that the small ones are not drowned out")
    reached = transitions["rewards"] > 0
    if _is_goal_reaching(env_id) and reached.any():
        open_ended = int((reached & ~(transitions["terminals"] > 0)).sum())
        if open_ended:
            notes.append(f"{open_ended} of the {int(reached.sum())} goal-reaching transitions are not terminal, where "
                         "D4RL's AntMaze data made the goal absorbing: values bootstrap past the goal, so scores "
                         "are not directly comparable with the paper's (docs/semantics.md)")
    return notes


def _summary(transitions: Dict[str, np.ndarray], episodes: int, action_low: np.ndarray, action_high: np.ndarray,
             env_id: Optional[str], ref_min: Optional[float], ref_max: Optional[float]) -> Dict[str, Any]:
    observations, rewards = transitions["observations"], transitions["rewards"]
    terminals, dones = transitions["terminals"] > 0, transitions["dones"] > 0
    actions = transitions["actions"]
    return {
        "transitions": int(len(rewards)),
        "trajectories": int(episodes),
        "terminals": int(terminals.sum()),
        "truncations": int((dones & ~terminals).sum()),
        "reward min / mean / max": [float(rewards.min()), float(rewards.mean()), float(rewards.max())],
        "action min per dimension": actions.min(axis=0).round(4).tolist(),
        "action max per dimension": actions.max(axis=0).round(4).tolist(),
        "action bounds": [action_low.tolist(), action_high.tolist()],
        "observation size": int(observations.shape[1]),
        "observation mean (min, max over dimensions)": [float(observations.mean(0).min()),
                                                        float(observations.mean(0).max())],
        "observation std (min, max over dimensions)": [float(observations.std(0).min()),
                                                       float(observations.std(0).max())],
        "constant observation dimensions": np.flatnonzero(observations.std(0) == 0).tolist(),
        "environment": env_id,
        "reference scores": [ref_min, ref_max],
        **({"goal-reaching transitions (reward > 0) / of them terminal": [
            int((rewards > 0).sum()), int(((rewards > 0) & terminals).sum())]} if _is_goal_reaching(env_id) else {}),
    }


def report_text(source: str, result: Dict[str, Any]) -> str:
    lines: List[str] = []
    problems = result["problems"]
    lines.append(f"{source}: {len(problems)} problem(s)" if problems else f"{source}: no problems")
    lines += [f"  - {line}" for line in problems[:_SHOWN_PROBLEMS]]
    if len(problems) > _SHOWN_PROBLEMS:
        lines.append(f"  ... and {len(problems) - _SHOWN_PROBLEMS} more")
    if result["summary"] is not None:
        lines.append("summary:")
        lines += [f"  {name}: {value}" for name, value in result["summary"].items()]
    lines += [f"note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2:
        raise UserError("give one SOURCE: python -m iql_tf.validate FILE_OR_MINARI_ID_OR_DIRECTORY [--env_id=...]")
    from iql_tf import envs, generation
    from iql_tf.convert import parse_action_bounds

    generation.register_generated_datasets()  # so that a generated id not made yet is named as one
    result = validate(argv[1], FLAGS.env_id, envs.parse_env_kwargs(FLAGS.env_kwargs),
                      parse_action_bounds(FLAGS.action_bounds), FLAGS.download, parse_columns(FLAGS.columns),
                      FLAGS.ogbench_dir)
    print(report_text(argv[1], result))
    sys.exit(1 if result["problems"] else 0)


def run() -> None:
    """The `iql-validate` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
