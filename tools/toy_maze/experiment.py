"""The Section 5.1 comparison: V* by value iteration, one-step RL (expectile 0.5) and IQL, on one dataset."""

import dataclasses
from typing import List

import numpy as np

from iql_tf.errors import UserError
from tools.toy_maze import learners
from tools.toy_maze.maze import DISCOUNT, Maze, value_iteration
from tools.toy_maze.rollouts import Transitions, make_dataset, success_rate

ONE_STEP_EXPECTILE = 0.5  # the mean over dataset actions: SARSA evaluation of the behaviour policy


def _setting(default: int | float, help_text: str):
    """A Config field whose help text is also the CLI flag's."""
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of one comparison; each field is also a CLI flag of the same name."""

    seed: int = _setting(0, "Seed of the dataset, the critics' initialisation and the evaluation episodes.")
    num_random_trajectories: int = _setting(99, "Uniform-random dataset trajectories beside the one optimal one.")
    expectile: float = _setting(0.95, "IQL's expectile tau, in (0, 1); one-step always uses 0.5.")
    beta: float = _setting(3.0, "AWR inverse temperature, the same for one-step and IQL.")
    steps: int = _setting(1000, "Full-batch gradient steps of the TD stage, and again of the AWR stage.")
    learning_rate: float = _setting(0.1, "Adam's initial learning rate, cosine-decayed to 0 over --steps.")
    dataset_horizon: int = _setting(
        100, "Steps per dataset trajectory: long enough for random walks from the start to cover the maze."
    )
    eval_horizon: int = _setting(
        50, "Time limit of an evaluation episode: 2.4x the optimal policy's mean 21 steps (39 at most in 2000 runs)."
    )
    eval_episodes: int = _setting(100, "Evaluation episodes per method, all from the start cell.")

    def __post_init__(self) -> None:
        if not 0.0 < self.expectile < 1.0:
            raise UserError(f"--expectile={self.expectile} must lie in (0, 1)")
        if self.beta < 0.0:
            raise UserError(f"--beta={self.beta} must be >= 0")
        if self.learning_rate <= 0.0:
            raise UserError(f"--learning_rate={self.learning_rate} must be > 0")
        for name in ("num_random_trajectories", "steps", "dataset_horizon", "eval_horizon", "eval_episodes"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name}={getattr(self, name)} must be a positive integer")


@dataclasses.dataclass(frozen=True)
class MethodResult:
    """One value map and its greedy policy, scored against V* and by rollouts from the start."""

    name: str
    values: np.ndarray  # V[s]
    actions: np.ndarray  # greedy action per state
    correlation: float  # Pearson r with V* over the non-goal cells: the shape, blind to scale and offset
    mae: float  # mean |V - V*| over the non-goal cells: the magnitude, i.e. how fast values decay
    success: float  # fraction of evaluation episodes that reach the goal


@dataclasses.dataclass(frozen=True)
class Results:
    maze: Maze
    dataset: Transitions
    methods: List[MethodResult]  # optimal, one-step, IQL

    def method(self, name: str) -> MethodResult:
        return next(m for m in self.methods if m.name == name)


def run(config: Config) -> Results:
    """Builds the u-maze and the dataset from `config.seed`, fits both learners and scores all three value maps."""
    maze = Maze.from_layout()
    optimal_values, optimal_q = value_iteration(maze, DISCOUNT)
    dataset = make_dataset(
        maze, optimal_q.argmax(axis=1), config.num_random_trajectories, config.dataset_horizon,
        np.random.default_rng(config.seed),
    )
    scored = np.arange(maze.num_states) != maze.goal

    def score(name: str, values: np.ndarray, actions: np.ndarray) -> MethodResult:
        rng = np.random.default_rng((config.seed, 1))  # the same evaluation episodes for every method
        return MethodResult(
            name=name,
            values=values,
            actions=actions,
            correlation=float(np.corrcoef(values[scored], optimal_values[scored])[0, 1]),
            mae=float(np.abs(values - optimal_values)[scored].mean()),
            success=success_rate(maze, actions, config.eval_episodes, config.eval_horizon, rng),
        )

    def learn(name: str, expectile: float) -> MethodResult:
        values = learners.fit_values(
            dataset, maze.num_states, expectile, DISCOUNT, config.steps, config.learning_rate, config.seed
        )
        actions = learners.extract_policy(dataset, values, config.beta, config.steps, config.learning_rate)
        return score(name, values.v, actions)

    return Results(
        maze=maze,
        dataset=dataset,
        methods=[
            score("optimal", optimal_values, optimal_q.argmax(axis=1)),
            learn("one-step", ONE_STEP_EXPECTILE),
            learn("iql", config.expectile),
        ],
    )
