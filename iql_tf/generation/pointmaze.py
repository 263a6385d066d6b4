"""The PointMaze stitching datasets (docs/data.md, "The PointMaze stitching recipe"), D4RL-maze2d style.

One long noisy stream in a PointMaze (continuing task): a BFS waypoint planner with a PD controller hops
between neighbouring cells. The stream is relabelled for one evaluation task, a start cell at one end of the
maze and a goal cell at the other: episodes of bounded length, reward 1 and termination on the first arrival
within 0.45 of the goal, and no stored episode that visits the start cell and later reaches the goal (such
episodes are split by a truncation), so solving the task needs stitching. Three mazes (`TASKS`): gymnasium-
robotics' UMaze (the quickstart), Medium and Large.
"""

import collections
import copy
import dataclasses
import math
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import gymnasium as gym
import numpy as np
from minari.data_collector import EpisodeBuffer

from iql_tf import envs

Cell = Tuple[int, int]
Step = Tuple[np.ndarray, np.ndarray, np.ndarray]  # (state, action, next state); state = x, y, vx, vy

U_MAZE = [[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 1, 1, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1]]
# gymnasium-robotics' MEDIUM_MAZE and LARGE_MAZE (gymnasium_robotics/envs/maze/maps.py).
MEDIUM_MAZE = [
    [1, 1, 1, 1, 1, 1, 1, 1],
    [1, 0, 0, 1, 1, 0, 0, 1],
    [1, 0, 0, 1, 0, 0, 0, 1],
    [1, 1, 0, 0, 0, 1, 1, 1],
    [1, 0, 0, 1, 0, 0, 0, 1],
    [1, 0, 1, 0, 0, 1, 0, 1],
    [1, 0, 0, 0, 1, 0, 0, 1],
    [1, 1, 1, 1, 1, 1, 1, 1],
]
LARGE_MAZE = [
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
    [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
    [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
    [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
    [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
    [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
    [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
]


@dataclasses.dataclass(frozen=True)
class MazeTask:
    """A maze, the evaluation task's start and goal cells (at opposite ends), and its episode lengths."""

    env_id: str
    layout: Sequence[Sequence[int]]
    start_cell: Cell
    goal_cell: Cell
    episode_steps: int  # the longest stored episode
    eval_episode_steps: int  # the evaluation horizon: gymnasium-robotics' default for the maze

    def eval_env_kwargs(self) -> dict:
        """The evaluation task: reset in the start cell, goal in the goal cell, episodic (terminates there)."""
        maze_map = copy.deepcopy([list(row) for row in self.layout])
        maze_map[self.start_cell[0]][self.start_cell[1]] = "r"
        maze_map[self.goal_cell[0]][self.goal_cell[1]] = "g"
        return {"maze_map": maze_map, "continuing_task": False, "reset_target": False}

    def planner(self) -> "Planner":
        return Planner(self.layout)


TASKS: Dict[str, MazeTask] = {
    "umaze": MazeTask("PointMaze_UMaze-v3", U_MAZE, (3, 1), (1, 1), 200, 300),
    "medium": MazeTask("PointMaze_Medium-v3", MEDIUM_MAZE, (1, 1), (6, 6), 400, 600),
    "large": MazeTask("PointMaze_Large-v3", LARGE_MAZE, (1, 1), (7, 10), 500, 800),
}
UMAZE = TASKS["umaze"]
GOAL_RADIUS = 0.45  # PointMaze's success distance
POSITION_NOISE = 0.25  # PointMaze adds U(-0.25, 0.25) per axis to goal and reset positions
ACTION_NOISE = 0.5  # std, as D4RL maze2d and Minari's pointmaze datasets
KP, KD = 10.0, 1.0
STREAM_KWARGS = {"continuing_task": True, "reset_target": False}
# The flattened observation (sorted keys, see iql_tf/envs.py): achieved_goal (2), desired_goal (2), observation (4).
DESIRED_GOAL, STATE = slice(2, 4), slice(4, 8)


class Planner:
    """Next cell on a BFS shortest path to the goal cell, and a PD controller towards it."""

    def __init__(self, maze_map: Sequence[Sequence[object]], scaling: float = 1.0):
        self._scaling = scaling
        self._x_center = len(maze_map[0]) / 2 * scaling
        self._y_center = len(maze_map) / 2 * scaling
        self._free = {(i, j) for i, row in enumerate(maze_map) for j, value in enumerate(row) if value != 1}
        self._next = {goal: self._toward(goal) for goal in self._free}

    def neighbours(self, cell: Cell) -> List[Cell]:
        i, j = cell
        return sorted({(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)} & self._free)

    def _toward(self, goal: Cell) -> Dict[Cell, Cell]:
        """For every free cell, its neighbour one step closer to `goal` (BFS from the goal)."""
        step = {goal: goal}
        queue = collections.deque([goal])
        while queue:
            cell = queue.popleft()
            for neighbour in self.neighbours(cell):
                if neighbour not in step:
                    step[neighbour] = cell
                    queue.append(neighbour)
        return step

    def next_cell(self, cell: Cell, goal_cell: Cell) -> Cell:
        """The neighbour of `cell` one step closer to `goal_cell` (the goal cell itself when unreachable)."""
        return self._next[goal_cell].get(cell, goal_cell)

    def cell(self, x: float, y: float) -> Cell:
        return math.floor((self._y_center - y) / self._scaling), math.floor((x + self._x_center) / self._scaling)

    def cells(self, positions: np.ndarray) -> np.ndarray:
        """`cell` of x, y positions with any leading shape, as an int array [..., 2]."""
        return np.stack([np.floor((self._y_center - positions[..., 1]) / self._scaling),
                         np.floor((positions[..., 0] + self._x_center) / self._scaling)], axis=-1).astype(int)

    def centre(self, cell: Cell) -> np.ndarray:
        return np.array([(cell[1] + 0.5) * self._scaling - self._x_center,
                         self._y_center - (cell[0] + 0.5) * self._scaling])

    def action(self, state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """PD action towards the next cell's centre, or the exact goal once the next cell is the goal cell."""
        x, y, vx, vy = state.tolist()
        goal_cell = self.cell(*goal.tolist())
        waypoint_cell = self.next_cell(self.cell(x, y), goal_cell)
        waypoint = goal if waypoint_cell == goal_cell else self.centre(waypoint_cell)
        return np.clip([KP * (waypoint[0] - x) - KD * vx, KP * (waypoint[1] - y) - KD * vy], -1.0, 1.0)


def noisy_position(planner: Planner, cell: Cell, rng: np.random.Generator) -> np.ndarray:
    """A cell's centre plus PointMaze's uniform position noise."""
    return planner.centre(cell) + rng.uniform(-POSITION_NOISE, POSITION_NOISE, size=2)


def _random_neighbour(planner: Planner, cell: Cell, rng: np.random.Generator) -> Cell:
    neighbours = planner.neighbours(cell)
    return neighbours[rng.integers(len(neighbours))]


def stream(env: gym.Env, planner: Planner, rng: np.random.Generator, seed: int) -> Iterator[Step]:
    """Endless noisy planner steps, hopping to a neighbour of each goal on arrival.

    Drives the MuJoCo point directly (the maze wrapper's reward and goal bookkeeping are not needed).
    """
    observation, _ = env.reset(seed=seed)
    point = env.unwrapped.point_env
    state = observation["observation"]
    goal_cell = _random_neighbour(planner, planner.cell(state[0], state[1]), rng)
    goal = noisy_position(planner, goal_cell, rng)
    while True:
        if math.dist(state[:2], goal) <= GOAL_RADIUS:
            goal_cell = _random_neighbour(planner, goal_cell, rng)
            goal = noisy_position(planner, goal_cell, rng)
        action = planner.action(state, goal) + rng.normal(0.0, ACTION_NOISE, size=2)
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        next_state = point.step(action)[0]
        yield state, action, next_state
        state = next_state


def relabel(steps: Iterator[Step], task: MazeTask, planner: Planner, rng: np.random.Generator,
            num_transitions: int) -> Iterator[EpisodeBuffer]:
    """Cuts the stream into evaluation-task episodes totalling `num_transitions` transitions.

    Each episode draws its desired goal with the evaluation env's position noise; a step starting inside
    that goal's radius (the ball lingering after an arrival) is skipped.
    """
    count = 0
    goal = noisy_position(planner, task.goal_cell, rng)
    episode: List[Step] = []
    for step in steps:
        if not episode and math.dist(step[0][:2], goal) <= GOAL_RADIUS:
            continue
        episode.append(step)
        count += 1
        arrived = math.dist(step[2][:2], goal) <= GOAL_RADIUS
        if arrived or len(episode) == task.episode_steps or count == num_transitions:
            yield from split_for_stitching(task, planner, episode, goal, arrived)
            if count == num_transitions:
                return
            episode = []
            goal = noisy_position(planner, task.goal_cell, rng)


def split_for_stitching(task: MazeTask, planner: Planner, episode: List[Step], goal: np.ndarray, arrived: bool
                        ) -> List[EpisodeBuffer]:
    """The episode, or two pieces (the first truncated) if it visits the start cell before arriving."""
    states = np.stack([state for state, _, _ in episode] + [episode[-1][2]])
    actions = np.stack([action for _, action, _ in episode])
    in_start = np.all(planner.cells(states[:, :2]) == task.start_cell, axis=-1)
    if not arrived or not in_start.any():
        return [_episode_buffer(states, actions, goal, arrived)]
    cut = int(np.flatnonzero(in_start)[-1]) + 1  # the transition leaving the start cell for the last time
    return [
        _episode_buffer(states[: cut + 1], actions[:cut], goal, False),
        _episode_buffer(states[cut:], actions[cut:], goal, True),
    ]


def _episode_buffer(states: np.ndarray, actions: np.ndarray, goal: np.ndarray, terminal: bool) -> EpisodeBuffer:
    steps = len(actions)
    ends = np.zeros(steps, bool)
    ends[-1] = True
    return EpisodeBuffer(
        observations={
            "achieved_goal": states[:, :2].copy(),
            "desired_goal": np.tile(goal, (steps + 1, 1)),
            "observation": states,
        },
        actions=actions,
        rewards=np.where(ends & terminal, 1.0, 0.0),
        terminations=ends & terminal,
        truncations=ends & (not terminal),
    )


def visits_start_then_goal(task: MazeTask, planner: Planner, observations: Dict[str, np.ndarray]) -> bool:
    """The stitching rule's violation: the ball is in the start cell and later within the goal radius."""
    in_start = np.all(planner.cells(observations["achieved_goal"]) == task.start_cell, axis=-1)
    at_goal = np.linalg.norm(observations["achieved_goal"] - observations["desired_goal"], axis=-1) <= GOAL_RADIUS
    return bool(in_start.any() and at_goal[int(np.argmax(in_start)) + 1:].any())


def generate_episodes(task: MazeTask, num_transitions: int, seed: int) -> Tuple[List[EpisodeBuffer], gym.Env]:
    """The relabelled episodes (deterministic in `seed`) and the stream env (whose spec Minari records)."""
    planner = task.planner()
    stream_rng, relabel_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    env = envs.make_env(task.env_id, STREAM_KWARGS, task.episode_steps)
    episodes = list(relabel(stream(env, planner, stream_rng, seed), task, planner, relabel_rng, num_transitions))
    for index, episode in enumerate(episodes):
        if visits_start_then_goal(task, planner, episode.observations):
            raise AssertionError(f"episode {index} breaks the stitching rule")
    return episodes, env


def planner_policy(task: MazeTask) -> Callable[[np.ndarray], np.ndarray]:
    """The noiseless planner as a policy of flattened observation batches (for ref_max_score)."""
    planner = task.planner()

    def policy(observations: np.ndarray) -> np.ndarray:
        return np.stack([planner.action(row[STATE], row[DESIRED_GOAL]) for row in observations]).astype(np.float32)

    return policy
