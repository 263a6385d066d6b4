"""Evaluate an exported policy: `python -m iql_tf.evaluate RUN_DIR/export/policy [--episodes=100]` (or
`iql-evaluate`).

Runs the SavedModel's deterministic policy (serving_default) in the environment its metadata.json records, or
in `--env_id` / `--env_kwargs` (a policy trained on data without a simulator, or another variant of the task),
and prints the mean return, the normalised score (when the dataset had reference scores) and the success rate
(when the environment reports success). Episodes are seeded like the trainer's evaluation (episode i of
`--seed` s resets with s * 100003 + i), so the same seed reproduces the training's final evaluation.
`--record=PATH.png` also draws the first episodes' trajectories on the maze (PointMaze, AntMaze).

    python -m iql_tf.evaluate runs/quickstart/export/policy --episodes=100 --record=runs/quickstart/paths.png
    python -m iql_tf.evaluate runs/pendulum/export/policy --env_id=Pendulum-v1 --episodes=10
"""

import json
import pathlib
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import numpy as np
from absl import flags

from iql_tf import cli
from iql_tf.errors import UserError

if TYPE_CHECKING:  # imported inside the functions: --help stays free of TensorFlow
    import gymnasium

    from iql_tf import evaluation

FLAGS = flags.FLAGS
_RECORDED_EPISODES = 10


def define_flags() -> None:
    flags.DEFINE_integer("episodes", 100, "Evaluation episodes.")
    flags.DEFINE_integer("seed", 0, "Seed of the episodes' resets.")
    flags.DEFINE_string("env_id", None, "Environment to evaluate in (default: the one in the policy's metadata).")
    flags.DEFINE_string("env_kwargs", None, "JSON object of environment kwargs (default: the metadata's).")
    flags.DEFINE_string("record", None, "Write the first episodes' trajectories on the maze to this PNG.")
    flags.DEFINE_bool("json", False, "Print the results as one JSON object.")
    flags.DEFINE_bool("trust_export", False, "Load an export that runs ops iql-tf's exports never use (it may do "
                      "anything: only for exports you trust).")


def evaluate_export(export_dir: str, episodes: int, seed: int = 0, env_id: Optional[str] = None,
                    env_kwargs: Optional[Dict[str, Any]] = None, record: Optional[str] = None,
                    trust_export: bool = False) -> Dict[str, float]:
    """The evaluation of an exported policy (see the module docstring); `record` writes the PNG."""
    from iql_tf import envs, evaluation
    from iql_tf.generation import rollouts

    if episodes <= 0:
        raise UserError(f"--episodes={episodes} must be positive")
    policy, metadata = rollouts.saved_model_policy(export_dir, trust_export)
    if env_id is None:
        env_id = rollouts.require_environment(export_dir, metadata)
        kwargs, steps = metadata.env_kwargs if env_kwargs is None else env_kwargs, metadata.max_episode_steps
    else:
        kwargs, steps = env_kwargs or {}, None
    make_env = lambda: envs.make_env(env_id, kwargs, steps)  # noqa: E731
    eval_envs = evaluation.make_envs(make_env, episodes)
    envs.check_env_fits(eval_envs[0], metadata.observation_keys, metadata.observation_dim, metadata.action_dim,
                        f"of the policy {export_dir}")
    try:
        results = evaluation.evaluate(policy, eval_envs, metadata.observation_keys, episodes, seed,
                                      metadata.ref_min_score, metadata.ref_max_score)
        if record:
            draw_trajectories(eval_envs[0], policy, metadata.observation_keys, seed, min(episodes, _RECORDED_EPISODES),
                              record)
    finally:
        for env in eval_envs:
            env.close()
    return results


def draw_trajectories(env: "gymnasium.Env", policy: "evaluation.Policy", keys: Optional[List[str]], seed: int,
                      episodes: int, path: str) -> None:
    """The (x, y) path of the first episodes, on the walls of a gymnasium-robotics maze, as a PNG."""
    from iql_tf import envs, evaluation, files

    maze = getattr(env.unwrapped, "maze", None)
    if maze is None or not keys or "achieved_goal" not in keys:
        raise UserError(f"--record draws trajectories on a maze (PointMaze, AntMaze); {env.spec.id} is not one: "
                        "drop --record")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 5))
    scale, layout = maze.maze_size_scaling, maze.maze_map
    for i, row in enumerate(layout):
        for j, cell in enumerate(row):
            if cell == 1:
                x, y = j * scale - maze.x_map_center, maze.y_map_center - (i + 1) * scale
                axis.add_patch(plt.Rectangle((x, y), scale, scale, color="0.3"))
    for episode in range(episodes):
        observation, _ = env.reset(seed=evaluation.episode_seed(seed, episode))
        positions, done = [np.asarray(observation["achieved_goal"])], False
        while not done:
            action = policy(envs.flatten_observation(observation, keys)[None])[0]
            observation, _, terminated, truncated, _ = env.step(action)
            positions.append(np.asarray(observation["achieved_goal"]))
            done = terminated or truncated
        positions = np.stack(positions)
        axis.plot(positions[:, 0], positions[:, 1], lw=1)
        axis.plot(*positions[0], "o", color="tab:green", ms=4)
        axis.plot(*np.asarray(observation["desired_goal"]), "*", color="tab:red", ms=10)
    axis.set_aspect("equal")
    axis.set_title(f"{env.spec.id}: {episodes} episodes (start o, goal *)")
    axis.axis("off")
    files.write_png(figure, path)


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2:
        raise UserError("give one exported policy: python -m iql_tf.evaluate RUN_DIR/export/policy [--episodes=N]")
    from iql_tf import envs, quiet

    quiet.quiet_tensorflow()
    if FLAGS.record:
        parent = pathlib.Path(FLAGS.record).expanduser().parent
        if not parent.is_dir():
            raise UserError(f"--record={FLAGS.record}: folder {parent} does not exist")
    kwargs = envs.parse_env_kwargs(FLAGS.env_kwargs) if FLAGS.env_kwargs is not None else None
    results = evaluate_export(argv[1], FLAGS.episodes, FLAGS.seed, FLAGS.env_id, kwargs, FLAGS.record,
                              FLAGS.trust_export)
    if FLAGS.json:
        print(json.dumps(results))
        return
    print(f"{argv[1]}: {FLAGS.episodes} episodes")
    for name, value in results.items():
        print(f"  {name}: {value:.4g}")
    if FLAGS.record:
        print(f"trajectories: {FLAGS.record}")


def run() -> None:
    """The `iql-evaluate` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
