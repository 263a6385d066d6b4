"""The paths of a policy's first evaluation episodes drawn on a gymnasium-robotics maze (PointMaze, AntMaze), as a
PNG: what `iql-evaluate --record` writes."""

from typing import List, Optional, Sequence

import gymnasium
import numpy as np

from iql_tf import envs, files
from iql_tf.errors import UserError
from iql_tf.policy import Policy


def draw_trajectories(env: gymnasium.Env, policy: Policy, keys: Optional[List[str]], reset_seeds: Sequence[int],
                      path: str) -> None:
    """The (x, y) path of one episode per reset seed, on the walls of a gymnasium-robotics maze, as a PNG."""
    maze = getattr(env.unwrapped, "maze", None)
    if maze is None or not keys or "achieved_goal" not in keys:
        raise UserError(f"--record draws trajectories on a maze whose observations say where the ball is (PointMaze, "
                        f"AntMaze); {env.spec.id} is not one: drop --record")
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
    for reset_seed in reset_seeds:
        observation, _ = env.reset(seed=reset_seed)
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
    axis.set_title(f"{env.spec.id}: {len(reset_seeds)} episodes (start o, goal *)")
    axis.axis("off")
    files.write_png(figure, path)
