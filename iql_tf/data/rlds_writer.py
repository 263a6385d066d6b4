"""Datasets written as RLDS (TFDS's TFRecord format, `tfds.builder_from_directory` opens the folder), so that data
made with iql-tf opens in RLDS tools. Written with TFDS's own `tfds.core.SequentialWriter` (the `rlds` and
`envlogger` packages do not import beside TensorFlow 2.21: docs/stack.md), into a staging folder renamed into
place when complete.

`write_transitions` writes transitions as RLDS episodes, the way `rlds_source.py` reads them back: one episode
per trajectory, its steps (o_t, a_t, r_t) and a final step holding the trajectory's last next observation with a
zero action and reward, `is_terminal` where the trajectory ended in a terminal state (`discount` 0 on the step
into it, 1 elsewhere), as TFDS's D4RL builders lay episodes out.
"""

import pathlib
from typing import Any, Dict, Iterable, Tuple

import numpy as np

from iql_tf import files
from iql_tf.data import rewards as rewards_lib
from iql_tf.data.transitions import Transitions, holds_frames
from iql_tf.errors import UserError

VERSION = "1.0.0"


def write_episodes(directory: "str | pathlib.Path", name: str, features: Any,
                   episodes: Iterable[Dict[str, Any]], split: str = "train") -> pathlib.Path:
    """Episodes ({'steps': {field: [T, ...]}, ...}) with TFDS `features` as an RLDS dataset in `directory`
    (which must not exist yet)."""
    from iql_tf.data.rlds_source import tfds_module

    tfds = tfds_module()
    directory = pathlib.Path(directory).expanduser()
    if directory.exists():
        raise UserError(f"{directory}: already exists; choose a new folder for the RLDS dataset or delete it first")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_directory(directory) as staging:
        identity = tfds.core.DatasetIdentity(name=name, version=tfds.core.Version(VERSION), data_dir=str(staging),
                                             module_name="")
        writer = tfds.core.SequentialWriter(ds_info=tfds.core.DatasetInfo(builder=identity, features=features),
                                            max_examples_per_shard=10_000)
        writer.initialize_splits([split])
        for episode in episodes:
            writer.add_examples({split: [episode]})
        writer.close_all()
    return directory


def step_features(observation_dim: int, action_dim: int) -> Any:
    """The step features of flat float32 observations and actions (TFDS's D4RL builders' layout, without infos)."""
    from iql_tf.data.rlds_source import tfds_module

    tfds = tfds_module()
    return tfds.features.FeaturesDict({"steps": tfds.features.Dataset({
        "observation": tfds.features.Tensor(shape=(observation_dim,), dtype=np.float32),
        "action": tfds.features.Tensor(shape=(action_dim,), dtype=np.float32),
        "reward": np.float32, "discount": np.float32,
        "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_})})


def transitions_episodes(data: Transitions) -> Iterable[Dict[str, Any]]:
    """Each trajectory of `data` as an RLDS episode (see the module docstring)."""
    for start, length in zip(rewards_lib.trajectory_starts(data["dones"]), rewards_lib.trajectory_lengths(data["dones"])):
        end = start + length
        terminal = bool(data["terminals"][end - 1])
        observations = np.concatenate([data["observations"][start:end], data["next_observations"][end - 1:end]])
        actions = np.concatenate([data["actions"][start:end], np.zeros_like(data["actions"][:1])])
        discount = np.ones(length + 1, np.float32)
        discount[-1] = 0.0
        if terminal:
            discount[-2] = 0.0
        flags = np.zeros(length + 1, bool)
        yield {"steps": {"observation": observations.astype(np.float32), "action": actions.astype(np.float32),
                         "reward": np.append(data["rewards"][start:end], 0.0).astype(np.float32),
                         "discount": discount, "is_first": np.concatenate([[True], flags[1:]]),
                         "is_last": np.concatenate([flags[:-1], [True]]),
                         "is_terminal": np.concatenate([flags[:-1], [terminal]])}}


def write_transitions(data: Transitions, directory: "str | pathlib.Path", name: str) -> Tuple[pathlib.Path, int]:
    """`data` as an RLDS dataset named `name` in `directory`; the folder and the number of episodes. Image
    observations (and observations of parts) are refused in one line (RLDS with images is not written yet)."""
    if holds_frames(data["observations"]):
        raise UserError(f"{name}: its observations are images (or parts with images), which iql-tf does not write as "
                        "RLDS yet; drop --rlds_dir (the Minari dataset is written)")
    shape = (data["observations"].shape[1], data["actions"].shape[1])
    folder = write_episodes(directory, name, step_features(*shape), transitions_episodes(data))
    return folder, int(data["dones"].sum())
