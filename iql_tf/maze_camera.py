"""A top-down camera over gymnasium-robotics' PointMaze, drawn with numpy (no OpenGL, so it runs on any machine):
uint8 frames [size, size, 3] with the walls in the red channel, the ball in the green and the goal in the blue,
the ball and the goal as Gaussian spots, so that a position between two pixels still shows.

`iql_tf/PointMazeCamera_UMaze-v3` (registered by `envs.register_environments`) is PointMaze UMaze seen through
it, with PointMaze's keyword arguments (`maze_map`, `continuing_task`, ...) and `image_size`; the generated
`iql_tf/pointmaze/umaze-stitch-camera-v0` is the quickstart's data seen through it (`generation`). A frame
shows positions only: the ball's velocity is in the difference of two frames (`make_dataset.frame_stack`).
"""

from typing import Any, Sequence

import gymnasium as gym
import numpy as np

ENV_ID = "iql_tf/PointMazeCamera_UMaze-v3"
BALL_RADIUS = 0.1  # PointMaze's ball, in maze units (a cell is 1 at PointMaze's scaling)
GOAL_RADIUS = 0.15


class Camera:
    """Frames of a maze (`maze_map`, cells of `scaling` units, 1 for a wall) from positions."""

    def __init__(self, maze_map: Sequence[Sequence[Any]], scaling: float, size: int):
        rows, columns = len(maze_map), len(maze_map[0])
        self.size, self.scaling = size, scaling
        self.x_centre, self.y_centre = columns / 2 * scaling, rows / 2 * scaling
        self.pixel = max(rows, columns) * scaling / size  # maze units per pixel, the maze's longer side filling it
        centres = (np.arange(size) + 0.5) * self.pixel  # pixel centres, from the maze's top-left corner
        cell_rows = np.minimum((centres / scaling).astype(int), rows - 1)
        cell_columns = np.minimum((centres / scaling).astype(int), columns - 1)
        walls = np.asarray([[cell == 1 for cell in row] for row in maze_map])[cell_rows[:, None], cell_columns[None]]
        self.walls = (walls * 255).astype(np.uint8)

    def frames(self, balls: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """Frames [N, size, size, 3] of the balls' and goals' x, y positions [N, 2]."""
        return np.stack([np.broadcast_to(self.walls, (len(balls), self.size, self.size)),
                         self._spots(balls, BALL_RADIUS), self._spots(goals, GOAL_RADIUS)], axis=-1)

    def _spots(self, positions: np.ndarray, radius: float) -> np.ndarray:
        centres = (np.arange(self.size) + 0.5) * self.pixel
        columns = positions[:, 0:1] + self.x_centre  # from the maze's left edge
        rows = self.y_centre - positions[:, 1:2]  # from its top edge
        spread = 2 * max(radius, self.pixel / 2) ** 2
        light = np.exp(-(centres[None] - rows) ** 2 / spread)[:, :, None] * \
            np.exp(-(centres[None] - columns) ** 2 / spread)[:, None, :]
        return np.round(255 * light).astype(np.uint8)


class MazeCamera(gym.ObservationWrapper):
    """PointMaze seen through `Camera`: its dict observation becomes the frame of its ball and goal."""

    def __init__(self, env: gym.Env, image_size: int = 32):
        super().__init__(env)
        maze = env.unwrapped.maze
        self.camera = Camera(maze.maze_map, maze.maze_size_scaling, image_size)
        self.observation_space = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)

    def observation(self, observation: dict) -> np.ndarray:
        return self.camera.frames(np.asarray(observation["achieved_goal"])[None],
                                  np.asarray(observation["desired_goal"])[None])[0]


def make(image_size: int = 32, **kwargs: Any) -> gym.Env:
    """The registered camera maze: PointMaze (UMaze unless `maze_map` says otherwise) through `MazeCamera`."""
    from gymnasium_robotics.envs.maze.maps import U_MAZE
    from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv

    return MazeCamera(PointMazeEnv(**{"maze_map": U_MAZE, **kwargs}), image_size)
