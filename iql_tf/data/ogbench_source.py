"""OGBench single-task datasets as a source: `ogbench:cube-single-play-singletask-task2-v0` (OGBench's own names).

OGBench (Park et al., ICLR 2025; github.com/seohongpark/ogbench) stores each dataset as `NAME.npz` (training)
and `NAME-val.npz` (validation) in its data folder (`~/.ogbench/data` unless you bind
`make_dataset.ogbench_dir`). They are read with ogbench's own API, never downloaded unless
`make_dataset.download = True` (then through `ogbench.download_datasets`):
  - `ogbench.load_dataset(..., add_info=True)` turns the stored rows into (s, a, s') transitions, dropping each
    episode's last row, and keeps the simulator state (`qpos`, `qvel`, `button_states`) of s;
  - `ogbench.relabel_utils.relabel_dataset` gives the single task's reward and mask from that state, as
    `ogbench.make_env_and_datasets` does: reward = (subtasks done) - (subtasks), mask = 0 where every subtask
    is done. So bootstrapping stops at a success state, while the play episode goes on: the mask becomes this
    project's terminal (no bootstrap, and the end of a trajectory), and the stored episode ends (`terminals` in
    OGBench's files) are trajectory ends that bootstrap, like time limits.
A `visual-` name (`ogbench:visual-cube-single-play-singletask-task2-v0`) reads the visual dataset's frames as uint8
images (as `ogbench.make_env_and_datasets` loads them: the next observations made by shifting, so the frames are
held twice while converting), relabelled by the state task's environment from the same `qpos`.
The evaluation environment is the single-task environment of the same name (`cube-single-singletask-task2-v0`),
which ends an episode at success and reports `info['success']`. ogbench >= 1.2.0 computes the environment's
reward, termination and success from the state s of each (s, a, s') step ('pre' timing), as the relabelled
dataset does; earlier versions, FQL's pinned 1.1.0 among them, from s' ('post'). We follow the installed
ogbench's registered default ('pre' in 1.2.x), the one consistent with the data (docs/semantics.md).
"""

import dataclasses
import os
import pathlib
import re
import zipfile
import zlib
from typing import Dict, Optional, Tuple

import numpy as np

from iql_tf import envs
from iql_tf.errors import UserError

PREFIX = "ogbench:"
DEFAULT_DATA_DIR = "~/.ogbench/data"  # ogbench.utils.DEFAULT_DATASET_DIR

# OGBench's state-based single-task families and the dataset kinds it publishes for them (its README and
# data_gen_scripts/commands.sh; cube-octuple's only dataset, play-100m, has another layout and is left out).
FAMILIES = {
    "cube-single": ("play", "noisy"),
    "cube-double": ("play", "noisy"),
    "cube-triple": ("play", "noisy"),
    "cube-quadruple": ("play", "noisy"),
    "scene": ("play", "noisy"),
    "puzzle-3x3": ("play", "noisy"),
    "puzzle-4x4": ("play", "noisy"),
    "puzzle-4x5": ("play", "noisy"),
    "puzzle-4x6": ("play", "noisy"),
    "pointmaze-medium": ("navigate", "stitch"),
    "pointmaze-large": ("navigate", "stitch"),
    "pointmaze-giant": ("navigate", "stitch"),
    "pointmaze-teleport": ("navigate", "stitch"),
    "antmaze-medium": ("navigate", "stitch", "explore"),
    "antmaze-large": ("navigate", "stitch", "explore"),
    "antmaze-giant": ("navigate", "stitch"),
    "antmaze-teleport": ("navigate", "stitch", "explore"),
    "humanoidmaze-medium": ("navigate", "stitch"),
    "humanoidmaze-large": ("navigate", "stitch"),
    "humanoidmaze-giant": ("navigate", "stitch"),
    "antsoccer-arena": ("navigate", "stitch"),
    "antsoccer-medium": ("navigate", "stitch"),
}
# The families OGBench also publishes seen through a camera (`visual-` names: 64x64x3 uint8 frames instead of the
# state; ogbench 1.2.2's registered visual environments).
VISUAL_FAMILIES = ("cube-single", "cube-double", "cube-triple", "cube-quadruple", "scene", "puzzle-3x3", "puzzle-4x4",
                   "puzzle-4x5", "puzzle-4x6", "antmaze-medium", "antmaze-large", "antmaze-giant", "antmaze-teleport",
                   "humanoidmaze-medium", "humanoidmaze-large", "humanoidmaze-giant")
VISUAL = envs.VISUAL
_NAME = re.compile(r"^(?P<family>[a-z0-9-]+?)-(?P<kind>[a-z]+)(?P<single>-singletask)?(?:-task(?P<task>\d+))?"
                   r"-(?P<version>v\d+)$")


@dataclasses.dataclass(frozen=True)
class OGBenchName:
    """An OGBench single-task name, split: `cube-single-play-singletask-task2-v0` is the dataset
    `cube-single-play-v0` evaluated in `cube-single-singletask-task2-v0`."""

    name: str  # as given, without the prefix
    family: str  # cube-single
    kind: str  # play
    task: Optional[int]  # 2; None: the family's default task
    version: str  # v0
    visual: bool = False  # visual-cube-single-...: the same data and task seen through a camera

    @property
    def dataset(self) -> str:
        return f"{VISUAL if self.visual else ''}{self.family}-{self.kind}-{self.version}"

    @property
    def env_id(self) -> str:
        """The evaluation environment (for a visual name, the task through the camera)."""
        return f"{VISUAL if self.visual else ''}{self.state_env_id}"

    @property
    def state_env_id(self) -> str:
        """The task's environment with state observations: what relabels the data (its qpos, never its frames)."""
        task = "" if self.task is None else f"-task{self.task}"
        return f"{self.family}-singletask{task}-{self.version}"

    def files(self, data_dir: "str | os.PathLike") -> Tuple[pathlib.Path, pathlib.Path]:
        """The training and validation files in `data_dir`."""
        folder = pathlib.Path(data_dir).expanduser()
        return folder / f"{self.dataset}.npz", folder / f"{self.dataset}-val.npz"


def is_ogbench(source: object) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def parse(source: str) -> OGBenchName:
    """`ogbench:NAME` -> its parts; a name OGBench does not have, or a goal-conditioned one, is one UserError."""
    name = source[len(PREFIX):]
    if "-oraclerep" in name:
        raise UserError(f"{source}: OGBench's oracle-representation (-oraclerep) datasets are not supported; name a "
                        "state-based or visual single-task one, e.g. ogbench:cube-single-play-singletask-task2-v0")
    visual = name.startswith(VISUAL)
    match = _NAME.match(name[len(VISUAL):] if visual else name)
    families = ", ".join(FAMILIES)
    if match is None or match["family"] not in FAMILIES:
        raise UserError(f"{source}: not an OGBench dataset name; names look like "
                        f"ogbench:cube-single-play-singletask-task2-v0, with a family among {families}")
    family, kind = match["family"], match["kind"]
    if visual and family not in VISUAL_FAMILIES:
        raise UserError(f"{source}: OGBench has no visual {family}; its visual families are "
                        f"{', '.join(VISUAL_FAMILIES)}")
    if kind not in FAMILIES[family]:
        raise UserError(f"{source}: OGBench's {family} has no '{kind}' dataset; it has "
                        f"{', '.join(FAMILIES[family])}")
    if not match["single"]:
        raise UserError(f"{source}: a goal-conditioned OGBench dataset; iql-tf trains single-task offline RL: name "
                        f"a task, e.g. ogbench:{family}-{kind}-singletask-task2-v0 (tasks 1-5, or -singletask- "
                        "alone for the family's default task)")
    task = None if match["task"] is None else int(match["task"])
    if task is not None and not 1 <= task <= 5:
        raise UserError(f"{source}: OGBench has tasks 1-5 for each family, not task{task}")
    return OGBenchName(name, family, kind, task, match["version"], visual)


def split_files(name: OGBenchName, data_dir: "str | os.PathLike", download: bool
                ) -> Tuple[pathlib.Path, Optional[pathlib.Path]]:
    """The training file, and the validation file if there is one; a missing training file is downloaded
    with ogbench's downloader when `download`, else one UserError saying how to get it."""
    envs.require_ogbench(f"{PREFIX}{name.name}")
    train, val = name.files(data_dir)
    if not train.is_file() and download:
        envs.register_ogbench_environments()
        import ogbench

        try:
            ogbench.download_datasets([name.dataset], str(train.parent))
        except Exception as error:  # urllib's and the filesystem's errors come in many types
            raise UserError(f"{PREFIX}{name.name}: downloading {name.dataset} into {train.parent} failed ({error}); "
                            "check the network, or generate it here (iql-generate --kind=ogbench)") from error
    if not train.is_file():
        raise UserError(
            f"{PREFIX}{name.name}: {train} not found; generate it here with `iql-generate --kind=ogbench "
            f"--dataset_id={name.dataset} --ogbench_dir={train.parent}` (manipulation play datasets), download it "
            "on a connected machine (make_dataset.download = True, or ogbench.download_datasets) and copy it there, "
            "or point make_dataset.ogbench_dir / --ogbench_dir at the folder that holds it")
    return train, (val if val.is_file() else None)


def load_split(name: OGBenchName, path: pathlib.Path) -> Dict[str, np.ndarray]:
    """One split as D4RL-style rows with explicit s': observations, actions, rewards, next_observations,
    terminals (OGBench's mask 0: every subtask done) and timeouts (the stored episode's end)."""
    envs.require_ogbench(f"{PREFIX}{name.name}")
    envs.register_ogbench_environments()  # imports ogbench
    import ogbench
    from ogbench.relabel_utils import relabel_dataset

    try:  # frames as uint8, as ogbench.make_env_and_datasets loads visual datasets
        dataset = ogbench.load_dataset(str(path), ob_dtype=np.uint8 if name.visual else np.float32, add_info=True)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise UserError(f"{path}: not a readable OGBench dataset file ({str(error).splitlines()[0]}); generate or "
                        "download it again") from error
    env = envs.make_env(name.state_env_id)  # OGBench's environments registered, built without start-up notes
    try:
        relabel_dataset(name.state_env_id, env, dataset)
    except (KeyError, IndexError, ValueError) as error:
        raise UserError(f"{path}: cannot be relabelled for {name.state_env_id} ({error}); the file is not "
                        f"{name.dataset}'s (its qpos / button_states do not fit the environment)") from error
    finally:
        env.close()
    episode_ends = dataset["terminals"] > 0  # load_dataset's: the last transition of each stored episode
    return {
        "observations": dataset["observations"],
        "actions": dataset["actions"],
        "rewards": dataset["rewards"],
        "next_observations": dataset["next_observations"],
        "terminals": (dataset["masks"] == 0).astype(np.float32),
        "timeouts": (episode_ends & (dataset["masks"] > 0)).astype(np.float32),
    }
