"""The toy u-maze of the IQL paper (Section 5.1, Figure 2): one-step RL versus IQL on a gridworld.

Run `python -m tools.toy_maze --output_dir=DIR`; docs/toy_maze.md describes the setup and results.

Modules: `maze` (layout, dynamics, value iteration), `rollouts` (dataset, evaluation), `learners`
(tabular V, Q and policy trained with `iql_tf.losses`), `experiment` (the comparison), `figures`
(heat maps) and `__main__` (the CLI).
"""
