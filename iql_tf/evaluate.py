"""Evaluate an exported policy: `python -m iql_tf.evaluate RUN_DIR/export/policy [--episodes=100]` (or
`iql-evaluate`).

Runs the SavedModel's deterministic policy (serving_default) in the environment its metadata.json records, or
in `--env_id` / `--env_kwargs` (a policy trained on data without a simulator, or another variant of the task),
and prints the mean return, the normalised score (when the dataset had reference scores) and the success rate
(when the environment reports success). Episodes are seeded like the trainer's evaluation (episode i of
`--seed` s resets with s * 100003 + i), so the same seed reproduces the training's final evaluation.
`--record=PATH.png` also draws the first episodes' trajectories on the maze (PointMaze, AntMaze).
Given the export's `policy.onnx` instead of its folder, it runs that model with onnxruntime (`pip install
'iql-tf[onnx]'`): the model a robot runs, scored in the same episodes.

    python -m iql_tf.evaluate runs/quickstart/export/policy --episodes=100 --record=runs/quickstart/paths.png
    python -m iql_tf.evaluate runs/quickstart/export/policy/policy.onnx --episodes=100
    python -m iql_tf.evaluate runs/pendulum/export/policy --env_id=Pendulum-v1 --episodes=10
"""

import json
import pathlib
import sys
from typing import Sequence

from absl import flags

from iql_tf import cli
from iql_tf.errors import UserError

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_integer("episodes", 100, "Evaluation episodes.")
    flags.DEFINE_integer("seed", 0, "Seed of the episodes' resets.")
    flags.DEFINE_string("env_id", None, "Environment to evaluate in (default: the one in the policy's metadata).")
    flags.DEFINE_string("env_kwargs", None, "JSON object of environment kwargs (default: the metadata's).")
    flags.DEFINE_string("record", None, "Write the first episodes' trajectories on the maze to this PNG.")
    flags.DEFINE_bool("json", False, "Print the results as one JSON object.")
    flags.DEFINE_bool("trust_export", False, "Load an export that runs ops iql-tf's exports never use (it may do "
                      "anything: only for exports you trust).")


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2:
        raise UserError("give one exported policy: python -m iql_tf.evaluate RUN_DIR/export/policy (or its "
                        "policy.onnx) [--episodes=N]")
    from iql_tf import envs, evaluation, quiet

    quiet.quiet_tensorflow()
    if FLAGS.record:
        parent = pathlib.Path(FLAGS.record).expanduser().parent
        if not parent.is_dir():
            raise UserError(f"--record={FLAGS.record}: folder {parent} does not exist")
    kwargs = envs.parse_env_kwargs(FLAGS.env_kwargs) if FLAGS.env_kwargs is not None else None
    results = evaluation.evaluate_export(argv[1], FLAGS.episodes, FLAGS.seed, FLAGS.env_id, kwargs, FLAGS.record,
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
