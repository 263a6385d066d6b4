"""OGBench's manipulation 'play' datasets, generated here with the scripted oracles that ship in the `ogbench`
wheel (`ogbench.manipspace.oracles.plan`), written in OGBench's own file format, so that the `ogbench:` source
reads them exactly as it reads downloaded files.

The recipe follows OGBench's dataset driver (`data_gen_scripts/generate_manipspace.py` and `commands.sh` in
github.com/seohongpark/ogbench, MIT; read there, written anew here on ogbench's public classes):
  - the goal-conditioned environment (e.g. `cube-single-v0`) in `mode='data_collection'`, no termination at
    the goal, episodes of 1001 steps (`max_episode_steps=1001`);
  - the non-Markovian plan oracles with noise 0.1 and noise smoothing 0.5, one per kind of object; whenever the
    oracle finishes its subtask the environment draws a new target (`set_new_target`, stacking probability 0
    for cube-single, uniform in a family range for more cubes, 0.5 otherwise) and the matching oracle takes over;
  - 1000 training episodes (3000 for cube-triple and puzzle-4x5, 5000 for cube-quadruple and puzzle-4x6) and a
    tenth as many validation episodes, in `NAME.npz` and `NAME-val.npz`;
  - scene episodes that leave the cube out of sight (too far right, or far left outside the drawer) are redone.
Files hold `observations`, `actions`, `terminals` (True on each episode's last row), `qpos`, `qvel` and, for
scene and puzzle, `button_states`, all rows of an episode back to back, as OGBench stores them.

Unlike OGBench's driver, every episode is seeded (`episode_seed`), so a dataset does not depend on how many
processes generate it, and episodes are generated in parallel processes.
"""

import dataclasses
import multiprocessing
import os
import pathlib
from typing import Dict, List, Optional

import numpy as np
from absl import logging

from iql_tf import envs, files
from iql_tf.env_process import RENDERING_FIX, rendering_failed
from iql_tf.errors import UserError

EPISODE_STEPS = 1001  # OGBench's max_episode_steps: 1000 transitions per episode once loaded
NOISE, NOISE_SMOOTHING = 0.1, 0.5
VALIDATION_FRACTION = 10  # a tenth as many validation episodes
_SEED_STRIDE = 1_000_003
_MAX_RETRIES = 100  # scene episodes redone at most this often before giving up


@dataclasses.dataclass(frozen=True)
class PlayDataset:
    """One of OGBench's play datasets: the environment it is collected in and its number of episodes."""

    env_id: str
    num_episodes: int


PLAY_DATASETS = {
    "cube-single-play-v0": PlayDataset("cube-single-v0", 1000),
    "cube-double-play-v0": PlayDataset("cube-double-v0", 1000),
    "cube-triple-play-v0": PlayDataset("cube-triple-v0", 3000),
    "cube-quadruple-play-v0": PlayDataset("cube-quadruple-v0", 5000),
    "scene-play-v0": PlayDataset("scene-v0", 1000),
    "puzzle-3x3-play-v0": PlayDataset("puzzle-3x3-v0", 1000),
    "puzzle-4x4-play-v0": PlayDataset("puzzle-4x4-v0", 1000),
    "puzzle-4x5-play-v0": PlayDataset("puzzle-4x5-v0", 3000),
    "puzzle-4x6-play-v0": PlayDataset("puzzle-4x6-v0", 5000),
}
# The same datasets seen through OGBench's camera (64x64x3 frames rendered by MuJoCo at every step; the state
# kept in qpos / qvel as in the state datasets): `visual-` names, collected in the visual environments.
PLAY_DATASETS.update({envs.VISUAL + name: PlayDataset(envs.VISUAL + recipe.env_id, recipe.num_episodes)
                      for name, recipe in list(PLAY_DATASETS.items())})

# The range of the per-episode stacking probability, by number of cubes (OGBench's driver).
_STACKING = {"single": (0.0, 0.0), "double": (0.0, 0.25), "triple": (0.05, 0.35), "quadruple": (0.1, 0.5)}


def episode_seed(seed: int, episode: int, attempt: int = 0) -> int:
    """The seed of episode `episode` (training episodes first, then validation) of a dataset made with `seed`."""
    return (seed * _SEED_STRIDE + episode) * (_MAX_RETRIES + 1) + attempt


def generate(dataset_name: str, output_dir: "str | os.PathLike", num_episodes: Optional[int] = None,
             episode_steps: int = EPISODE_STEPS, seed: int = 0, processes: Optional[int] = None,
             overwrite: bool = False) -> Dict[str, pathlib.Path]:
    """Generates `dataset_name` (a key of PLAY_DATASETS) as `output_dir/NAME.npz` and `NAME-val.npz`.

    `num_episodes` training episodes (default: OGBench's size) plus a tenth as many (at least one) validation
    episodes of `episode_steps` steps; `processes` worker processes (default: one per core). Each file is
    written atomically, the validation file first (so a training file means both are there); existing files are
    an error unless `overwrite`. Returns the two paths.
    """
    if dataset_name not in PLAY_DATASETS:
        raise UserError(f"--dataset_id={dataset_name!r} is no OGBench play dataset generated here; choose one of "
                        f"{', '.join(PLAY_DATASETS)}")
    recipe = PLAY_DATASETS[dataset_name]
    num_episodes = recipe.num_episodes if num_episodes is None else num_episodes
    if num_episodes <= 0:
        raise UserError(f"--num_episodes must be > 0, got {num_episodes}")
    if episode_steps < 2:
        raise UserError(f"--episode_steps must be >= 2 (one transition needs two states), got {episode_steps}")
    processes = processes or os.cpu_count() or 1
    if processes <= 0:
        raise UserError(f"--processes must be > 0, got {processes}")
    output_dir = pathlib.Path(output_dir).expanduser()
    paths = {"train": output_dir / f"{dataset_name}.npz", "val": output_dir / f"{dataset_name}-val.npz"}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not overwrite:
        raise UserError(f"{', '.join(existing)}: already exist; pass --overwrite to replace them or choose another "
                        "--ogbench_dir")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{output_dir}: cannot create it ({error.strerror or error}); choose a writable "
                        "--ogbench_dir") from error
    num_validation = max(1, num_episodes // VALIDATION_FRACTION)
    logging.info("generating OGBench %s with its plan oracles in %s: %d + %d validation episodes of %d steps, "
                 "seed %d, %d process(es)", dataset_name, recipe.env_id, num_episodes, num_validation,
                 episode_steps, seed, processes)
    episodes = _run_episodes(recipe.env_id, num_episodes + num_validation, episode_steps, seed, processes)
    # Validation first: a training file then means the pair is complete, even after an interruption.
    for split, part in (("val", episodes[num_episodes:]), ("train", episodes[:num_episodes])):
        _write(paths[split], part)
    logging.info("wrote %s (%d transitions) and %s", paths["train"], num_episodes * (episode_steps - 1),
                 paths["val"])
    return paths


def _run_episodes(env_id: str, count: int, episode_steps: int, seed: int, processes: int
                  ) -> List[Dict[str, np.ndarray]]:
    from tqdm import tqdm

    jobs = [(env_id, episode_steps, seed, episode) for episode in range(count)]
    bar = tqdm(total=count, desc="episodes", unit="ep", dynamic_ncols=True)
    try:
        # Frames rendered by MuJoCo: always in a spawned worker (its renderer and TensorFlow cannot share a
        # process: iql_tf/env_process.py).
        if processes == 1 and not env_id.startswith(envs.VISUAL):
            results = []
            try:
                for job in jobs:
                    results.append(_episode(job))
                    bar.update()
            finally:  # in this process, not a worker's: close what it built
                for env, _ in _WORKER_STATE.values():
                    env.close()
                _WORKER_STATE.clear()
            return results
        # Spawned workers: forking a process that holds MuJoCo (and TensorFlow) state is not safe.
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = []
            for result in pool.imap(_episode, jobs, chunksize=1):
                results.append(result)
                bar.update()
            return results
    finally:
        bar.close()


_WORKER_STATE = {}  # per worker process: env_id -> (env, oracles)


def _episode(job) -> Dict[str, np.ndarray]:
    """One episode of `env_id`'s play data; a renderer that cannot start is one line saying how to make it work."""
    env_id = job[0]
    try:
        return _healthy_episode(*job)
    except Exception as error:  # noqa: BLE001 - a renderer fails in many ways (env_process.rendering_failed)
        if not env_id.startswith(envs.VISUAL) or not rendering_failed(error):
            raise
        raise UserError(f"{env_id}: rendering its frames failed ({type(error).__name__}: {error}); "
                        f"{RENDERING_FIX}") from None


def _healthy_episode(env_id: str, episode_steps: int, seed: int, episode: int) -> Dict[str, np.ndarray]:
    """One episode; scene episodes that hide the cube are redone with a new seed."""
    env, oracles = _environment(env_id, episode_steps)
    for attempt in range(_MAX_RETRIES + 1):
        rows = _collect(env, oracles, env_id, episode_seed(seed, episode, attempt))
        if not envs.without_camera(env_id).startswith("scene") or _cube_in_sight(rows["qpos"]):
            return rows
    raise UserError(f"{env_id}: episode {episode} hid the cube {_MAX_RETRIES + 1} times in a row; try another --seed")


def _environment(env_id: str, episode_steps: int):
    if env_id not in _WORKER_STATE:
        if env_id.startswith(envs.VISUAL):  # in a spawned worker (`_run_episodes`), which renders
            envs.allow_rendering()
        envs.register_ogbench_environments()
        import gymnasium as gym
        from ogbench.manipspace.oracles.plan import button_plan, cube_plan, drawer_plan, window_plan

        with envs.quiet_ogbench_construction():
            env = gym.make(env_id, terminate_at_goal=False, mode="data_collection", max_episode_steps=episode_steps)
        noise = dict(noise=NOISE, noise_smoothing=NOISE_SMOOTHING)
        if envs.without_camera(env_id).startswith("cube"):
            oracles = {"cube": cube_plan.CubePlanOracle(env=env, **noise)}
        elif envs.without_camera(env_id).startswith("scene"):
            oracles = {
                "cube": cube_plan.CubePlanOracle(env=env, **noise),
                "button": button_plan.ButtonPlanOracle(env=env, **noise),
                "drawer": drawer_plan.DrawerPlanOracle(env=env, **noise),
                "window": window_plan.WindowPlanOracle(env=env, **noise),
            }
        else:  # puzzle: buttons pressed with the gripper closed
            oracles = {"button": button_plan.ButtonPlanOracle(env=env, gripper_always_closed=True, **noise)}
        _WORKER_STATE[env_id] = (env, oracles)
    return _WORKER_STATE[env_id]


def _stacking_probability(env_id: str) -> float:
    family = envs.without_camera(env_id)
    cubes = family.split("-")[1] if family.startswith("cube") else None
    low, high = _STACKING.get(cubes, (0.5, 0.5))
    return float(np.random.uniform(low, high)) if high > low else low


def _collect(env, oracles, env_id: str, seed: int) -> Dict[str, np.ndarray]:
    """One episode with the oracles' global numpy generator and the environment both seeded by `seed`."""
    np.random.seed(seed % 2**32)  # the oracles draw from numpy's global generator
    observation, info = env.reset(seed=seed % 2**32)
    stacking = _stacking_probability(env_id)
    oracle = oracles[info["privileged/target_task"]]
    oracle.reset(observation, info)
    has_buttons = hasattr(env.unwrapped, "_cur_button_states")
    rows = {key: [] for key in ("observations", "actions", "terminals", "qpos", "qvel")}
    if has_buttons:
        rows["button_states"] = []
    done = False
    while not done:
        action = np.clip(np.asarray(oracle.select_action(observation, info)), -1, 1)
        next_observation, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        if oracle.done:  # the subtask is finished: a new target, and the oracle of its kind takes over
            oracle_observation, oracle_info = env.unwrapped.set_new_target(p_stack=stacking)
            oracle = oracles[oracle_info["privileged/target_task"]]
            oracle.reset(oracle_observation, oracle_info)
        rows["observations"].append(observation)
        rows["actions"].append(action)
        rows["terminals"].append(done)
        rows["qpos"].append(info["prev_qpos"])  # the state the observation shows, as OGBench stores it
        rows["qvel"].append(info["prev_qvel"])
        if has_buttons:
            rows["button_states"].append(info["prev_button_states"])
        observation = next_observation
    # Frames stay uint8, as OGBench stores them.
    dtypes = {"terminals": bool, "button_states": np.int64,
              "observations": np.uint8 if np.asarray(observation).dtype == np.uint8 else np.float32}
    return {key: np.asarray(values, dtype=dtypes.get(key, np.float32)) for key, values in rows.items()}


def _cube_in_sight(qpos: np.ndarray) -> bool:
    """OGBench's health check for scene: the cube never goes too far right, nor far left outside the drawer."""
    cube_xyz = qpos[:, 14:17]
    too_far_right = (cube_xyz[:, 1] >= 0.29).any()
    left_outside_drawer = ((cube_xyz[:, 1] <= -0.3) & ((cube_xyz[:, 2] < 0.06) | (cube_xyz[:, 2] > 0.08))).any()
    return not (too_far_right or left_outside_drawer)


def _write(path: pathlib.Path, episodes: List[Dict[str, np.ndarray]]) -> None:
    arrays = {key: np.concatenate([episode[key] for episode in episodes]) for key in episodes[0]}
    with files.atomic_file(path) as temporary:
        with open(temporary, "wb") as file:  # a file object: np.savez would append .npz to the staging name
            np.savez_compressed(file, **arrays)
