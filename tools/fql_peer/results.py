"""Reading both implementations' records into one result.json layout.

    {implementation, task, seed, steps, final_success, evaluations: [[step, success], ...],
     updates_per_second, wall_seconds, command, budget, ...}

Speed is read from what each run logs itself per window of `log_interval` updates: FQL's train.csv
`time/epoch_time` (seconds per update) and iql-tf's TensorBoard `train/steps_per_second`. Both windows run from
one log to the next, so a window also holds whatever the loop did after the log that opened it: the evaluation
(both) and the checkpoint (iql-tf). updates_per_second is 1 / the median seconds per update over the windows,
leaving out the first (compilation) and every window holding an evaluation or a checkpoint: the update's own
pace, the same way for both.
"""

import csv
import pathlib
import re
import statistics
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from iql_tf import run_files
from iql_tf.errors import UserError

RESULT = "result.json"
Windows = Sequence[Tuple[int, float]]  # (step at the window's end, seconds per update in it)


def updates_per_second(windows: Windows, pauses: Iterable[int]) -> Optional[float]:
    """1 / median seconds per update over `windows` (by step), without the first and without those holding a
    pause: work done after the log at step p (an evaluation, a checkpoint) lands in the window after p."""
    pauses = sorted(set(pauses))
    kept, start = [], 0
    for index, (step, seconds) in enumerate(sorted(windows)):
        if index and not any(start <= pause < step for pause in pauses):
            kept.append(seconds)
        start = step
    return 1.0 / statistics.median(kept) if kept else None


# --- FQL -------------------------------------------------------------------------------------------------


def read_csv(path: pathlib.Path) -> List[Dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError as error:
        raise UserError(f"{path} is missing: the peer's run did not log (see its output)") from error


def fql_log_dir(save_dir: pathlib.Path, seed: int) -> pathlib.Path:
    """FQL writes SAVE_DIR/<wandb project>/<run group>/sd<seed>_<time>/: the one folder of this run."""
    found = sorted(path.parent for path in save_dir.glob(f"*/*/sd{seed:03d}_*/eval.csv"))
    if len(found) != 1:
        raise UserError(f"expected one FQL run folder with eval.csv under {save_dir}, found {len(found)}: delete "
                        f"{save_dir} and run again")
    return found[0]


def _number(row: Dict[str, str], column: str, path: pathlib.Path) -> float:
    try:
        return float(row[column])
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: no number in column {column!r} (row {row.get('step')}); is it FQL's log?") from error


def fql_result(log_dir: pathlib.Path) -> Dict[str, Any]:
    """Final success, evaluations and speed of an FQL run from its eval.csv and train.csv."""
    eval_path, train_path = log_dir / "eval.csv", log_dir / "train.csv"
    evaluations = [[int(_number(row, "step", eval_path)), _number(row, "evaluation/success", eval_path)]
                   for row in read_csv(eval_path)]
    if not evaluations:
        raise UserError(f"{eval_path} has no evaluation: the peer's run did not finish")
    windows = [(int(_number(row, "step", train_path)), _number(row, "time/epoch_time", train_path))
               for row in read_csv(train_path)]
    return {"final_success": evaluations[-1][1], "evaluations": evaluations,
            "updates_per_second": updates_per_second(windows, [step for step, _ in evaluations]),
            "log_dir": str(log_dir)}


# --- iql-tf ----------------------------------------------------------------------------------------------


def _setting(operative_config: Optional[str], name: str) -> Optional[int]:
    match = re.search(rf"^{re.escape(name)} = (\d+)$", operative_config or "", re.M)
    return int(match.group(1)) if match else None


def iql_tf_windows(workdir: pathlib.Path) -> List[Tuple[int, float]]:
    """(step, seconds per update) of each logged window: TensorBoard's train/steps_per_second."""
    import tensorflow as tf

    windows = {}
    for event_file in sorted(workdir.glob("events.*")):
        for record in tf.data.TFRecordDataset(str(event_file)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == "train/steps_per_second":
                    rate = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                    windows[event.step] = 1.0 / rate
    return sorted(windows.items())


def iql_tf_result(workdir: pathlib.Path, seed: int, windows: Optional[Windows] = None) -> Dict[str, Any]:
    """Final success, evaluations and speed of a finished iql-tf run (`windows`: read from its events if None)."""
    files = run_files.RunFiles(workdir)
    finished = files.finished()
    if finished is None:
        raise UserError(f"{workdir} has no finished.json: the iql-tf run did not finish (re-run compare to resume it)")
    evaluations = sorted([step, values["success_rate"]] for (step, member), values in files.results().items()
                         if member == seed and "success_rate" in values)
    if not evaluations or evaluations[-1][0] != finished["step"]:
        raise UserError(f"{workdir}: no success_rate at the final step {finished['step']} for seed {seed} in "
                        f"{run_files.RESULTS}; does the dataset's environment report success?")
    interval = _setting(files.operative_config(), "train.checkpoint_interval")
    checkpoints = range(interval, finished["step"] + 1, interval) if interval else []
    windows = iql_tf_windows(workdir) if windows is None else windows
    return {"final_success": evaluations[-1][1], "evaluations": evaluations,
            "updates_per_second": updates_per_second(windows, [step for step, _ in evaluations] + list(checkpoints))}
