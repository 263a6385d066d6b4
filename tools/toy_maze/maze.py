"""The u-shaped gridworld, its stochastic dynamics and value iteration for V* (numpy).

Default layout (`U_MAZE`, row 0 at the top; `#` wall, `S` start, `G` goal): two 3-wide arms joined
at the bottom, start and goal at the tops of the two arms, 44 free cells, a shortest path of 14 moves.

    S..#..G
    ...#...
    ...#...
    ...#...
    ...#...
    .......
    .......

Actions move one cell up, down, left or right; a move into a wall or the border leaves the agent in
place. With probability `random_prob` (0.25 in the paper) the commanded move is replaced by one drawn
uniformly among the four, so the agent "transitions to a random state" next to it instead of the
commanded one. We read the paper's "random state" as a random *neighbouring* state rather than a
teleport to any cell: with teleports V* is nearly flat away from the goal (each step keeps only
0.75 * 0.9 of the value, the rest is a maze-wide average), unlike Fig. 2 (b), and random jumps next to
the goal let even the one-step policy succeed (80-99 % in our trials), which contradicts Section 5.1.
Entering the goal gives reward 10 and ends the episode (the goal is absorbing, V*(goal) = 0).
"""

import dataclasses
from typing import Sequence, Tuple

import numpy as np

U_MAZE = (
    "S..#..G",
    "...#...",
    "...#...",
    "...#...",
    "...#...",
    ".......",
    ".......",
)
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])  # up, down, left, right as (row, column) steps
NUM_ACTIONS = len(MOVES)
GOAL_REWARD = 10.0
RANDOM_PROB = 0.25
DISCOUNT = 0.9


@dataclasses.dataclass(frozen=True)
class Maze:
    """A gridworld over the free cells of `layout`; states are indices into `cells`."""

    layout: Tuple[str, ...]
    cells: np.ndarray  # [num_states, 2] (row, column) of each free cell
    next_state: np.ndarray  # [num_states, NUM_ACTIONS] the cell each move leads to
    start: int
    goal: int
    random_prob: float

    @classmethod
    def from_layout(cls, layout: Sequence[str] = U_MAZE, random_prob: float = RANDOM_PROB) -> "Maze":
        """Parses a layout with exactly one `S` and one `G`."""
        cells = [(r, c) for r, row in enumerate(layout) for c, char in enumerate(row) if char != "#"]
        index = {cell: i for i, cell in enumerate(cells)}
        marked = {char: index[(r, c)] for r, row in enumerate(layout) for c, char in enumerate(row) if char in "SG"}
        next_state = np.array(
            [[index.get((r + dr, c + dc), i) for dr, dc in MOVES] for i, (r, c) in enumerate(cells)]
        )
        return cls(tuple(layout), np.array(cells), next_state, marked["S"], marked["G"], random_prob)

    @property
    def num_states(self) -> int:
        return len(self.cells)

    @property
    def shape(self) -> Tuple[int, int]:
        return len(self.layout), len(self.layout[0])

    def step(self, state: int, action: int, rng: np.random.Generator) -> int:
        """Samples the next state: the commanded move, or with `random_prob` a uniformly random one."""
        if rng.random() < self.random_prob:
            action = rng.integers(NUM_ACTIONS)
        return int(self.next_state[state, action])

    def transition_probs(self) -> np.ndarray:
        """P[s, a, s'] of `step`, for value iteration."""
        commanded = np.eye(self.num_states)[self.next_state]  # [s, a, s'] one-hot of the commanded move
        return (1.0 - self.random_prob) * commanded + self.random_prob * commanded.mean(axis=1, keepdims=True)

    def to_grid(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Lays per-state values out on the layout's grid, `fill` on walls."""
        grid = np.full(self.shape, fill, dtype=float)
        grid[self.cells[:, 0], self.cells[:, 1]] = values
        return grid


def value_iteration(maze: Maze, discount: float = DISCOUNT, tolerance: float = 1e-10) -> Tuple[np.ndarray, np.ndarray]:
    """Optimal V*[s] and Q*[s, a]; reward GOAL_REWARD on entering the goal, which is terminal."""
    probs = maze.transition_probs()
    continues = np.ones(maze.num_states)
    continues[maze.goal] = 0.0
    rewards = GOAL_REWARD * probs[:, :, maze.goal]
    values = np.zeros(maze.num_states)
    while True:
        q_values = rewards + discount * probs @ (continues * values)
        new_values = q_values.max(axis=1) * continues
        if np.abs(new_values - values).max() < tolerance:
            return new_values, q_values
        values = new_values
