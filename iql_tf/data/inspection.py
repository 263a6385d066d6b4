"""What a dataset source holds and what is wrong with it, all at once (`validate`), for `iql-validate` and for
anyone who wants the answer as data: every problem (not only the first, as conversion and training stop at),
each with the field, how many rows it affects and the first of them; a summary (transitions, trajectories,
terminals and truncations, reward and action ranges, observation statistics, the evaluation environment); and
notes on what to set for training.
"""

from typing import Any, Dict, List, Optional

import numpy as np

from iql_tf.data.parts import is_parts, map_parts
from iql_tf.data.transitions import holds_frames, is_image
from iql_tf.errors import UserError

_SHOWN_PROBLEMS = 50
# Observation dimensions whose std differ by more than this factor: the small ones barely reach the networks
# unless observations are normalised.
_STD_SPREAD = 100.0


def validate(source: Any, env_id: Optional[str] = None, env_kwargs: Optional[Dict[str, Any]] = None,
             action_bounds=None, download: bool = False, columns: Optional[Dict[str, Any]] = None,
             ogbench_dir: Optional[str] = None, tfds_data_dir: Optional[str] = None,
             rlds_options: Any = None) -> Dict[str, Any]:
    """{"problems": [one line each], "summary": {...} or None, "notes": [one line each]}; `source` as
    make_dataset takes it (in-memory sources too)."""
    from iql_tf.data import sources, validation  # gymnasium, minari, h5py: only for a check

    resolved = sources.resolve(source, download, columns=columns, ogbench_dir=ogbench_dir,
                               tfds_data_dir=tfds_data_dir, rlds_options=rlds_options)
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
    arrays = {key: map_parts(lambda values: values.numpy(), value) for key, value in tensors.items()}
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
    # Images are scaled by the networks: no advice on their spread.
    std = np.zeros(0) if holds_frames(transitions["observations"]) else transitions["observations"].std(0)
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
        **_observation_summary(observations),
        "environment": env_id,
        "reference scores": [ref_min, ref_max],
        **({"goal-reaching transitions (reward > 0) / of them terminal": [
            int((rewards > 0).sum()), int(((rewards > 0) & terminals).sum())]} if _is_goal_reaching(env_id) else {}),
    }


def _observation_summary(observations: Any, label: str = "observation") -> Dict[str, Any]:
    """Images', vectors' or each part's summary (parts: each labelled by its name)."""
    if is_parts(observations):
        return {name: value for part, values in observations.items()
                for name, value in _observation_summary(values, f"observations/{part}").items()}
    return _image_summary(observations, label) if is_image(observations) else _vector_summary(observations, label)


def _image_summary(observations: np.ndarray, label: str) -> Dict[str, Any]:
    """What images are, without the per-pixel statistics (a float copy of a million frames would not fit); one
    image observation's lines as they were before parts."""
    pixels = "pixel min / max" if label == "observation" else f"{label} pixel min / max"
    return {f"{label} images (height, width, channels)": list(observations.shape[1:]),
            pixels: [int(observations.min()), int(observations.max())]}


def _vector_summary(observations: np.ndarray, label: str) -> Dict[str, Any]:
    return {
        f"{label} size": int(observations.shape[1]),
        f"{label} mean (min, max over dimensions)": [float(observations.mean(0).min()),
                                                     float(observations.mean(0).max())],
        f"{label} std (min, max over dimensions)": [float(observations.std(0).min()),
                                                    float(observations.std(0).max())],
        f"constant {label} dimensions": np.flatnonzero(observations.std(0) == 0).tolist(),
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
