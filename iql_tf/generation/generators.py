"""The generators of offline datasets in the local Minari root (the `iql-generate` command is
`iql_tf/generate.py`): the PointMaze stitching datasets, uniform random actions, an exported policy's
rollouts. No download, no jax; seeded and deterministic.

Datasets are written with `minari.create_dataset_from_buffers`, atomically (`minari_writer`), with the
evaluation env spec and reference scores (a random policy for ref_min_score; the noiseless planner or
source policy for ref_max_score), measured by `evaluation.evaluate` like a trained policy, so that
normalised scores work.
"""

import functools
from typing import Any, Callable, List, Mapping, Optional

import gymnasium as gym
import minari
import numpy as np
from absl import logging
from minari.data_collector import EpisodeBuffer

from iql_tf import envs
from iql_tf.data import validation
from iql_tf.errors import UserError
from iql_tf.generation import minari_writer, pointmaze, rollouts
from iql_tf.policy import loading

# The project's generated ids: one stitching dataset per maze of `pointmaze.TASKS`, and the UMaze's through a camera.
POINTMAZE_DATASET_IDS = {maze: f"iql_tf/pointmaze/{maze}-stitch-v0" for maze in pointmaze.TASKS}
CAMERA_DATASET_ID = "iql_tf/pointmaze/umaze-stitch-camera-v0"
CAMERA_IMAGE_SIZE = 24  # pixels: about 5 per cell of the UMaze, small enough for a CPU
DEFAULT_NUM_STEPS = 100_000
DEFAULT_REFERENCE_EPISODES = 10
_AUTHOR = "iql-tf"
_CODE = "iql_tf/generation/generators.py"


def check_settings(num_steps: int, num_reference_episodes: int, noise_std: float = 0.0) -> None:
    """Settings that would generate nothing (or never finish) are UserErrors, for the CLI and library callers."""
    if num_steps <= 0:
        raise UserError(f"num_steps must be > 0, got {num_steps} (--num_steps: transitions to generate)")
    if num_reference_episodes <= 0:
        raise UserError(f"num_reference_episodes must be > 0, got {num_reference_episodes} (--reference_episodes)")
    if not noise_std >= 0.0:  # also refuses nan
        raise UserError(f"noise_std must be >= 0, got {noise_std} (--noise_std)")


def write_dataset(
    dataset_id: str,
    episodes: List[EpisodeBuffer],
    env: gym.Env,
    eval_env: gym.Env,
    ref_min_score: float,
    ref_max_score: Optional[float],
    algorithm: str,
    description: str,
    num_reference_episodes: int,
    overwrite: bool,
) -> minari.MinariDataset:
    """Writes a Minari dataset atomically (replacing an existing one if `overwrite`): see `minari_writer`."""
    minari_writer.check_new_id(dataset_id, overwrite)  # again: generation took a while

    def write() -> None:
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            episodes,
            env=env,
            eval_env=eval_env,
            algorithm_name=algorithm,
            author=_AUTHOR,
            author_email="n/a",
            code_permalink=_CODE,
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            num_episodes_average_score=num_reference_episodes,
            description=description,
        )
        if ref_max_score is None:  # minari stores reference scores only with a max score
            dataset.storage.update_metadata({"ref_min_score": ref_min_score})

    dataset = minari_writer.write_atomically(dataset_id, overwrite, write)
    logging.info(
        "wrote Minari dataset %s at %s: %d transitions in %d episodes, ref scores %s / %s",
        dataset_id, dataset.spec.data_path, dataset.total_steps, dataset.total_episodes, ref_min_score, ref_max_score,
    )
    return dataset


def _checked_env(make_env: Callable[[], gym.Env]) -> gym.Env:
    """An environment whose actions a trained policy can hold (a bounded Box), checked before any generation."""
    env = make_env()
    validation.check_action_space(f"environment {env.spec.id}", env.action_space)
    return env


def generate_pointmaze(
    dataset_id: Optional[str] = None,
    num_steps: int = DEFAULT_NUM_STEPS,
    seed: int = 0,
    overwrite: bool = False,
    num_reference_episodes: int = DEFAULT_REFERENCE_EPISODES,
    maze: str = "umaze",
) -> minari.MinariDataset:
    """A stitching dataset of one maze of `pointmaze.TASKS` (see `pointmaze.py`), written as `dataset_id`
    (default: the maze's id in POINTMAZE_DATASET_IDS); its reference scores are success rates on the evaluation
    task (0 for a random policy, 1 for the noiseless planner)."""
    if maze not in pointmaze.TASKS:
        raise UserError(f"--maze={maze!r} is unknown; mazes: {', '.join(pointmaze.TASKS)}")
    task, dataset_id = pointmaze.TASKS[maze], dataset_id or POINTMAZE_DATASET_IDS[maze]
    check_settings(num_steps, num_reference_episodes)
    minari_writer.check_new_id(dataset_id, overwrite)
    episodes, env = pointmaze.generate_episodes(task, num_steps, seed)
    make_eval_env = functools.partial(envs.make_env, task.env_id, task.eval_env_kwargs(), task.eval_episode_steps)
    eval_env = make_eval_env()
    ref_min_score, ref_max_score = rollouts.reference_scores(
        pointmaze.planner_policy(task), eval_env.action_space, make_eval_env,
        envs.observation_keys(eval_env.observation_space), num_reference_episodes, seed,
    )
    description = (
        f"{num_steps} steps of a noisy (std {pointmaze.ACTION_NOISE}) BFS-waypoint + PD planner hopping between "
        f"neighbouring cells of {task.env_id}, relabelled for start cell {task.start_cell} -> goal cell "
        f"{task.goal_cell} (reward 1 and termination on arrival, episodes of at most {task.episode_steps} steps); "
        "no episode visits the start cell and then reaches the goal, so the task needs stitching. "
        f"Seed {seed}. Reference scores are success rates on the eval env."
    )
    return write_dataset(dataset_id, episodes, env, eval_env, ref_min_score, ref_max_score,
                         "bfs-waypoint-pd-planner+noise, relabelled", description, num_reference_episodes, overwrite)


def generate_pointmaze_camera(dataset_id: str = CAMERA_DATASET_ID, image_size: int = CAMERA_IMAGE_SIZE,
                              overwrite: bool = False, state_id: str = POINTMAZE_DATASET_IDS["umaze"]
                              ) -> minari.MinariDataset:
    """A UMaze dataset of PointMaze's dict observations (`state_id`, the stitching dataset by default, generated
    first when missing) seen through `maze_camera`: every observation the frame of its ball and goal, the
    actions, rewards and episode ends as they are, evaluated in the quickstart's task through the same camera;
    its reference scores are the state dataset's (the same task's success rates)."""
    from iql_tf import maze_camera
    from iql_tf.data import generated, sources

    minari_writer.check_new_id(dataset_id, overwrite)
    if not sources.minari_dataset_exists(state_id):
        generated.generate(state_id, sources.minari_dataset_exists)
    states = minari.load_dataset(state_id)
    task = pointmaze.UMAZE
    env = envs.make_env(maze_camera.ENV_ID, dict(pointmaze.STREAM_KWARGS, image_size=image_size), task.episode_steps)
    eval_env = envs.make_env(maze_camera.ENV_ID, dict(task.eval_env_kwargs(), image_size=image_size),
                             task.eval_episode_steps)
    camera = env.get_wrapper_attr("camera")
    episodes = [EpisodeBuffer(observations=camera.frames(episode.observations["achieved_goal"],
                                                         episode.observations["desired_goal"]),
                              actions=episode.actions, rewards=episode.rewards, terminations=episode.terminations,
                              truncations=episode.truncations) for episode in states.iterate_episodes()]
    metadata = states.storage.metadata
    description = (f"{state_id} seen through a {image_size}x{image_size} top-down camera (iql_tf/maze_camera.py: "
                   "walls red, ball green, goal blue); reference scores are that dataset's.")
    return write_dataset(dataset_id, episodes, env, eval_env, metadata.get("ref_min_score"),
                         metadata.get("ref_max_score"), f"{metadata.get('algorithm_name')}, through a camera",
                         description, metadata.get("num_episodes_average_score") or DEFAULT_REFERENCE_EPISODES,
                         overwrite)


def generate_random(
    dataset_id: str,
    env_id: str,
    env_kwargs: Optional[Mapping[str, Any]] = None,
    num_steps: int = DEFAULT_NUM_STEPS,
    seed: int = 0,
    overwrite: bool = False,
    num_reference_episodes: int = DEFAULT_REFERENCE_EPISODES,
) -> minari.MinariDataset:
    """Uniform random actions in a gymnasium env with actions in [-1, 1]; ref_min_score is the random
    policy's mean return under evaluation (no ref_max_score)."""
    check_settings(num_steps, num_reference_episodes)
    minari_writer.check_new_id(dataset_id, overwrite)
    make_env = functools.partial(envs.make_env, env_id, env_kwargs)
    env = _checked_env(make_env)
    keys = envs.observation_keys(env.observation_space)
    episodes = rollouts.collect(env, rollouts.random_policy(env.action_space, seed), keys, num_steps, seed)
    (ref_min_score,) = rollouts.mean_returns(
        [rollouts.random_policy(env.action_space, seed)], make_env, keys, num_reference_episodes, seed
    )
    return write_dataset(dataset_id, episodes, env, env, ref_min_score, None, "uniform-random",
                         f"{num_steps} steps of uniform random actions in {env_id}, seed {seed}.",
                         num_reference_episodes, overwrite)


def generate_policy(
    dataset_id: str,
    policy_dir: str,
    noise_std: float,
    num_steps: int = DEFAULT_NUM_STEPS,
    seed: int = 0,
    overwrite: bool = False,
    num_reference_episodes: int = DEFAULT_REFERENCE_EPISODES,
    trust_export: bool = False,
) -> minari.MinariDataset:
    """Rollouts of an exported policy with Gaussian action noise, in the env its metadata names (an export
    running ops iql-tf's never use is refused unless `trust_export`)."""
    check_settings(num_steps, num_reference_episodes, noise_std)
    minari_writer.check_new_id(dataset_id, overwrite)
    policy, metadata = loading.load_policy(policy_dir, trust_export)
    if metadata.frame_stack > 1:
        raise UserError(f"{policy_dir}: the policy reads stacks of {metadata.frame_stack} frames, and rollouts record "
                        "what the environment gives: generating from frame-stacked policies is not supported yet")
    env_id = loading.require_environment(policy_dir, metadata)
    make_env = functools.partial(envs.make_env, env_id, metadata.env_kwargs, metadata.max_episode_steps)
    env = _checked_env(make_env)
    keys = metadata.observation_keys
    noisy = rollouts.with_noise(policy, noise_std, env.action_space, np.random.default_rng(seed))
    episodes = rollouts.collect(env, noisy, keys, num_steps, seed)
    ref_min_score, ref_max_score = rollouts.reference_scores(
        policy, env.action_space, make_env, keys, num_reference_episodes, seed
    )
    description = (
        f"{num_steps} steps of the policy exported at {policy_dir} (trained on {metadata.dataset}) with "
        f"Gaussian action noise of std {noise_std}, seed {seed}. ref_max_score: the noiseless policy."
    )
    return write_dataset(dataset_id, episodes, env, env, ref_min_score, ref_max_score, "exported-policy+noise",
                         description, num_reference_episodes, overwrite)
