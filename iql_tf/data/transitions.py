"""Transition semantics (docs/semantics.md): episodes or D4RL rows -> flat transition arrays.

A dataset is a plain dict of numpy arrays with the keys of `TRANSITION_KEYS`, float32 but image observations:
  observations [N, obs_dim] (or uint8 images [N, height, width, channels], or a dict of named parts of either kind,
  `parts.py`), actions [N, act_dim], rewards [N],
  next_observations (as observations),
  terminals [N]  1.0 only where the environment terminated (a time-limit truncation is not terminal),
  dones [N]      1.0 on the last transition of each trajectory (used to split trajectories, never in a target).
No transition crosses an episode boundary.
"""

import hashlib
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from iql_tf.data.parts import is_parts, labelled, leaves, map_parts
from iql_tf.data.rewards import trajectory_lengths
from iql_tf.errors import UserError

TRANSITION_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "dones")

Transitions = Dict[str, np.ndarray]

# Reference (IQL's D4RL loader): consecutive rows belong to one trajectory while s'_i == s_{i+1}.
CONTINUITY_TOLERANCE = 1e-6


def _float32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)


def _observations(observations: Any) -> Any:
    """Observations as stored: images as they are (uint8), vectors as float32 (each part alike)."""
    return map_parts(lambda array: np.asarray(array) if is_image(np.asarray(array)) else _float32(array), observations)


def is_image(array: np.ndarray) -> bool:
    """Whether observations are images: uint8 rows of [height, width, channels] (any other observations are
    vectors of numbers, float32)."""
    return not is_parts(array) and array.dtype == np.uint8 and array.ndim == 4


def holds_frames(observations: Any) -> bool:
    """Whether observations are stored frame by frame, each once (`shards.py`): images, or parts (which hold an
    image at least)."""
    return is_parts(observations) or is_image(observations)


def rows_of(values: Any, index: Any) -> Any:
    """The rows `index` (a slice, mask or indices) of an array or of each part."""
    return map_parts(lambda array: array[index], values)


def _frames_differ(frames: np.ndarray, others: np.ndarray, rows: int = 4096) -> np.ndarray:
    """Per row, whether two arrays of frames differ anywhere, compared `rows` rows at a time (a comparison of
    1M 64x64x3 frames at once would take 12 GB)."""
    flags = [np.any((frames[start:start + rows] != others[start:start + rows]).reshape(
        min(rows, len(frames) - start), -1), axis=1) for start in range(0, len(frames), rows)]
    return np.concatenate(flags) if flags else np.zeros(0, bool)


def from_episode(
    observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminations: np.ndarray
) -> Transitions:
    """One Minari-style episode: T+1 (flat) observations for T actions; transition t uses observations t, t+1."""
    dones = np.zeros(len(actions), np.float32)
    dones[-1] = 1.0
    return {
        "observations": _observations(rows_of(observations, slice(None, -1))),
        "actions": _float32(actions),
        "rewards": _float32(rewards),
        "next_observations": _observations(rows_of(observations, slice(1, None))),
        "terminals": _float32(terminations),
        "dones": dones,
    }


def stacked_shape(observation_shape: Sequence[int], frame_stack: int) -> List[int]:
    """The shape of a stack of `frame_stack` images of `observation_shape` along their channels
    (`frame_stacks.py`)."""
    return [*observation_shape[:-1], observation_shape[-1] * frame_stack]


def content_sha256(data: Transitions) -> str:
    """The sha256 of the transitions themselves: each key's name, shape and little-endian float32 values (image
    observations: their bytes; parts: each as KEY/NAME, in order)."""
    digest = hashlib.sha256()
    for key in TRANSITION_KEYS:
        for label, array in labelled(key, data[key]):
            values = np.ascontiguousarray(array, None if array.dtype == np.uint8 and key.endswith("observations")
                                          else "<f4")
            digest.update(f"{label} {list(values.shape)}\n".encode())
            digest.update(values.data)
    return digest.hexdigest()


def hold_out_trajectories(data: Transitions, fraction: float, where: str, seed: int = 0
                          ) -> "tuple[Transitions, Transitions]":
    """(kept, held out): round(fraction x trajectories) whole trajectories, drawn by a generator seeded by `seed`,
    held out in their order; a fraction that holds out none, or all, is a UserError."""
    lengths = trajectory_lengths(data["dones"])
    count = len(lengths)
    held = int(round(fraction * count))
    if not 1 <= held < count:
        raise UserError(f"{where}: validation_fraction {fraction} of its {count} trajectories holds out {held}; give "
                        "a fraction that holds out at least one trajectory and keeps one")
    chosen = np.zeros(count, bool)
    chosen[np.random.default_rng(seed).choice(count, held, replace=False)] = True
    rows = np.repeat(chosen, lengths)
    return ({key: rows_of(value, ~rows) for key, value in data.items()},
            {key: rows_of(value, rows) for key, value in data.items()})


def concatenate(blocks: "list[Transitions]") -> Transitions:
    return {key: map_parts(lambda *arrays: np.concatenate(arrays), *[block[key] for block in blocks])
            for key in TRANSITION_KEYS}


def from_rows(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
    next_observations: Optional[np.ndarray] = None,
) -> Transitions:
    """D4RL-style rows (one step per row, episodes back to back) -> transitions.

    With `next_observations` every row is a transition; a trajectory ends at a terminal, a timeout, where
    the next row does not continue this row's s', and at the last row. Without it, s' is the next row of the
    same episode, so the last row of an episode ending by timeout (or by the end of the file) has no s' and
    is dropped. A terminal row is kept with s' = s: its mask is 0, so s' never enters a target, and dropping
    it would erase the termination.
    """
    terminals = np.asarray(terminals).astype(bool)
    timeouts = np.asarray(timeouts).astype(bool)
    if next_observations is not None:
        dones = terminals | timeouts
        if holds_frames(observations):  # exact: a frame (each part) is the next row's or another
            jumps = np.any([_frames_differ(part[1:], next_part[:-1]) for part, next_part in
                            zip(leaves(observations), leaves(next_observations))], axis=0)
        else:
            jumps = np.linalg.norm(observations[1:] - next_observations[:-1], axis=-1) > CONTINUITY_TOLERANCE
        dones[:-1] |= jumps
        dones[-1] = True
        return {
            "observations": _observations(observations),
            "actions": _float32(actions),
            "rewards": _float32(rewards),
            "next_observations": _observations(next_observations),
            "terminals": _float32(terminals),
            "dones": _float32(dones),
        }
    episode_end = terminals | timeouts
    episode_end[-1] = True
    # As D4RL's `qlearning_dataset` (which the reference's loader calls): time-out rows without s' are
    # skipped, terminal rows kept. A terminal last row gets s' = s, which its mask of 0 keeps out of every
    # target; dropping it would erase the termination.
    keep = ~episode_end | terminals
    episode_index = np.cumsum(episode_end) - episode_end  # rows of one episode share an index
    next_rows = map_parts(lambda array: np.where(terminals.reshape(-1, *[1] * (array.ndim - 1)), array,
                                                 np.append(array[1:], array[-1:], axis=0))[keep], observations)
    kept_episode = episode_index[keep]
    dones = np.append(kept_episode[1:] != kept_episode[:-1], True) if kept_episode.size else kept_episode
    return {
        "observations": _observations(rows_of(observations, keep)),
        "actions": _float32(actions[keep]),
        "rewards": _float32(rewards[keep]),
        "next_observations": _observations(next_rows),
        "terminals": _float32(terminals[keep]),
        "dones": _float32(dones),
    }
