"""Episodes in the maze: the offline dataset (1 optimal + N uniform-random trajectories) and evaluation.

Every episode starts at the maze's start cell and ends on entering the goal (terminal) or after
`horizon` steps (a truncation: its last transition keeps mask 1 and bootstraps from V(s')).
"""

import dataclasses
from typing import Callable

import numpy as np

from iql_tf.errors import UserError
from tools.toy_maze.maze import GOAL_REWARD, NUM_ACTIONS, Maze

Policy = Callable[[int, np.random.Generator], int]


@dataclasses.dataclass(frozen=True)
class Transitions:
    """Flat arrays of (s, a, r, s', terminal), with the trajectory each transition belongs to."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_states: np.ndarray
    terminals: np.ndarray
    trajectory_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.states)


def rollout(maze: Maze, policy: Policy, horizon: int, rng: np.random.Generator) -> np.ndarray:
    """One episode as an int array of rows (s, a, s')."""
    rows = []
    state = maze.start
    while len(rows) < horizon and state != maze.goal:
        action = policy(state, rng)
        next_state = maze.step(state, action, rng)
        rows.append((state, action, next_state))
        state = next_state
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def greedy(actions: np.ndarray) -> Policy:
    """The deterministic policy that takes `actions[s]` in state s."""
    return lambda state, rng: int(actions[state])


def uniform_random(state: int, rng: np.random.Generator) -> int:
    """The behaviour policy of the random trajectories."""
    return int(rng.integers(NUM_ACTIONS))


def make_dataset(
    maze: Maze, optimal_actions: np.ndarray, num_random: int, horizon: int, rng: np.random.Generator
) -> Transitions:
    """Trajectory 0 follows the optimal policy (it must reach the goal); trajectories 1..num_random act uniformly."""
    episodes = [rollout(maze, greedy(optimal_actions), horizon, rng)]
    if episodes[0][-1, 2] != maze.goal:
        raise UserError(
            f"the optimal trajectory did not reach the goal within --dataset_horizon={horizon}: use a longer "
            "--dataset_horizon"
        )
    episodes += [rollout(maze, uniform_random, horizon, rng) for _ in range(num_random)]
    rows = np.concatenate(episodes)
    reached = rows[:, 2] == maze.goal
    return Transitions(
        states=rows[:, 0],
        actions=rows[:, 1],
        rewards=GOAL_REWARD * reached,
        next_states=rows[:, 2],
        terminals=reached,
        trajectory_ids=np.repeat(np.arange(len(episodes)), [len(e) for e in episodes]),
    )


def success_rate(maze: Maze, actions: np.ndarray, episodes: int, horizon: int, rng: np.random.Generator) -> float:
    """Fraction of episodes in which the greedy policy `actions` reaches the goal within `horizon` steps."""
    ends = [rollout(maze, greedy(actions), horizon, rng)[-1, 2] for _ in range(episodes)]
    return float(np.mean(np.array(ends) == maze.goal))
