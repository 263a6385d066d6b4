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

Without a simulator, `--dataset=SOURCE` (any source iql-train takes) estimates the policy's value from that data
by fitted Q evaluation instead (`iql_tf/ope`): its discounted value from the data's initial states, with a 95 %
interval, in the data's reward units; `--fqe_workdir` keeps its checkpoints and TensorBoard scalars, to resume.

    python -m iql_tf.evaluate runs/robot/export/policy --dataset=logs/robot.npz --fqe_steps=20000
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
    flags.DEFINE_string("dataset", None, "Estimate the policy's value from this dataset by fitted Q evaluation, "
                        "without an environment.")
    flags.DEFINE_integer("fqe_steps", None, "FQE's gradient updates (default: fqe.num_steps, 20000).")
    flags.DEFINE_float("discount", None, "Discount of the FQE estimate (default: fqe.discount, 0.99).")
    flags.DEFINE_integer("fqe_ensemble_size", None, "Q networks of bootstrapped FQE, each on its own resample of the "
                         "data; their spread is the estimate's uncertainty (default: fqe.ensemble_size, 1).")
    flags.DEFINE_string("initial_states", None, "An .npy file of raw observations [K, size] the policy starts from "
                        "where deployed: FQE's value is read out there instead of at the data's trajectory starts.")
    flags.DEFINE_string("fqe_workdir", None, "Where FQE's checkpoints and TensorBoard scalars go (resumed from).")
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
    if FLAGS.dataset is not None:
        _estimate(argv[1])
        return
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


def _estimate(export: str) -> None:
    """`--dataset`: fitted Q evaluation of the export on that data."""
    from iql_tf import json_records
    from iql_tf.ope import estimation
    from iql_tf.policy import loading
    from iql_tf.policy.checks import CHECKSUMS_FILE
    from iql_tf.settings import FQESettings

    given = [name for name in ("env_id", "env_kwargs", "record") if getattr(FLAGS, name) is not None]
    if given:
        raise UserError(f"--{given[0]} rolls the policy out in an environment, --dataset estimates it without one: "
                        "give one of them")
    overrides = {name: value for name, value in (("num_steps", FLAGS.fqe_steps), ("discount", FLAGS.discount),
                                                 ("ensemble_size", FLAGS.fqe_ensemble_size)) if value is not None}
    settings = FQESettings(**overrides)
    policy, metadata = loading.load_policy(export, FLAGS.trust_export)
    folder = pathlib.Path(export).expanduser()
    folder = folder.parent if folder.suffix == ".onnx" else folder
    checksums = folder / CHECKSUMS_FILE
    identity = json_records.digest(checksums.read_text() if checksums.is_file() else metadata.to_json())
    starts = None if FLAGS.initial_states is None else estimation.load_initial_states(FLAGS.initial_states)
    result = estimation.estimate_value(policy, metadata, FLAGS.dataset, settings, FLAGS.fqe_workdir,
                                       policy_identity=identity, initial_observations=starts)
    if FLAGS.json:
        print(json.dumps(result))
        return
    print(f"{export} on {FLAGS.dataset}: fitted Q evaluation, {result['fqe_steps']} updates")
    print(f"  discounted value (discount {result['discount']:g}) from {result['initial_states']} initial states "
          f"({result['initial_states_from']}): "
          f"{result['value']:.4g} [{result['value_low']:.4g}, {result['value_high']:.4g}]")
    if "member_values" in result:
        print(f"  {len(result['member_values'])} bootstrapped Q networks: their values spread by "
              f"{result['member_spread']:.4g}; less that: {result['value_pessimistic']:.4g}")
    if "return_equivalent" in result:
        print(f"  as an undiscounted return over {result['horizon']} steps: {result['return_equivalent']:.4g} "
              f"[{result['return_equivalent_low']:.4g}, {result['return_equivalent_high']:.4g}]")
    if "soft_opc" in result:
        print(f"  soft off-policy classification: {result['soft_opc']:.4g} (mean Q of the "
              f"{result['successful_trajectories']} successful trajectories' transitions less the mean Q of all)")


def run() -> None:
    """The `iql-evaluate` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
