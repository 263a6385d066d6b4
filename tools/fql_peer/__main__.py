"""FQL's IQL (github.com/seohongpark/fql, JAX) as a peer to iql-tf on the same OGBench data: `python -m tools.fql_peer`.

    python -m tools.fql_peer setup [--fql_source=URL_OR_GIT_DIR] [--root=.peer]
    python -m tools.fql_peer run --task=cube-single-play-singletask-task2-v0 --seed=0 --data_dir=DIR --out=DIR
    python -m tools.fql_peer compare --tasks=T1,T2 --seeds=0,1,2 --data_dir=DIR --out=DIR
    python -m tools.fql_peer table --out=DIR
    python -m tools.fql_peer pixels --out=DIR [--image_size=64 --frame_stack=3 --batch_size=64 --updates=10]

`setup` checks FQL's code out at the pinned commit (never committed here) and gives it its own venv: FQL's
agents, jax on CPU, and iql-tf's environment stack (ogbench 1.2.2, not FQL's 1.1.0: both implementations are
then evaluated by identical environment code; ogbench 1.2.0 moved single-task success to 'pre'). `run` trains
FQL's main.py with agents/iql.py on DATA_DIR's NAME.npz / NAME-val.npz (written by `python -m iql_tf.generate
--kind=ogbench`; never downloaded) and writes OUT/result.json. `compare` trains the peer and iql-tf with the same
budget, seed by seed, interleaved so that load on the machine hits both alike, skipping pairs already done, and
writes OUT/table.md: final success per task (mean, 95 % bootstrap CI, per seed) and updates per second.
`pixels` checks FQL's own pixel IQL update (impala_small) against `tools/benchmark/fql_reference.py` and times it
beside iql-tf's (`tools/fql_peer/pixels.py`).
"""

import pathlib
import sys
from typing import Sequence

from absl import flags

from iql_tf import cli
from iql_tf.errors import UserError

FLAGS = flags.FLAGS
COMMANDS = ("setup", "run", "compare", "table", "pixels")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def define_flags() -> None:
    from tools.fql_peer import install

    flags.DEFINE_string("fql_source", install.DEFAULT_SOURCE, "setup: FQL's git URL, or a local clone or bare repo.")
    flags.DEFINE_string("root", str(REPO_ROOT / ".peer"), "Where FQL's checkout (ROOT/fql) and venv (ROOT/venv) live.")
    flags.DEFINE_string("python", "python3", "setup: the Python 3.11 interpreter that creates the venv.")
    flags.DEFINE_string("task", None, "run: an OGBench single-task name, e.g. cube-single-play-singletask-task2-v0.")
    flags.DEFINE_integer("seed", 0, "run: the seed.")
    flags.DEFINE_list("tasks", [], "compare: OGBench single-task names.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "compare: the seeds.")
    flags.DEFINE_string("data_dir", None, "Folder with the datasets NAME.npz and NAME-val.npz (OGBench's layout).")
    flags.DEFINE_string("out", None, "run: the run's folder; compare / table: the comparison's folder.")
    flags.DEFINE_integer("steps", 1_000_000, "Gradient updates.")
    flags.DEFINE_list("hidden_dims", ["256", "256"], "Hidden sizes of every network (FQL: actor and value nets).")
    flags.DEFINE_float("alpha", 10.0, "AWR inverse temperature (FQL's agent.alpha, iql-tf's IQLAgent.beta).")
    flags.DEFINE_float("expectile", 0.9, "The value expectile (tau).")
    flags.DEFINE_integer("batch_size", 256, "Batch size.")
    flags.DEFINE_float("discount", 0.99, "Discount.")
    flags.DEFINE_integer("eval_interval", 100_000, "Updates between evaluations (both also evaluate at the end).")
    flags.DEFINE_integer("eval_episodes", 50, "Episodes per evaluation.")
    flags.DEFINE_bool("side_by_side", False, "compare: run the peer and iql-tf of each task and seed at once, each "
                      "pinned to a core of its own (needs 2 cores; the same hardware share for both).")
    flags.DEFINE_integer("log_interval", 5000, "Updates per speed measurement (at most steps / 10 is used).")
    flags.DEFINE_integer("image_size", 64, "pixels: frames of image_size x image_size x 3.")
    flags.DEFINE_integer("frame_stack", 3, "pixels: frames stacked along the channels (FQL's visual runs: 3).")
    flags.DEFINE_integer("updates", 10, "pixels: timed updates of each implementation.")


def budget_from_flags():
    from tools.fql_peer.peer import Budget

    try:
        hidden = tuple(int(size) for size in FLAGS.hidden_dims)
    except ValueError as error:
        raise UserError(f"--hidden_dims={','.join(FLAGS.hidden_dims)}: give integers, e.g. 256,256") from error
    return Budget(steps=FLAGS.steps, hidden_dims=hidden, alpha=FLAGS.alpha, expectile=FLAGS.expectile,
                  batch_size=FLAGS.batch_size, discount=FLAGS.discount, eval_interval=FLAGS.eval_interval,
                  eval_episodes=FLAGS.eval_episodes, log_interval=FLAGS.log_interval).checked()


def _required(**values) -> None:
    for name, value in values.items():
        if not value:
            raise UserError(f"--{name} is required (see --help)")


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise UserError(f"give one command of {', '.join(COMMANDS)} (got {' '.join(argv[1:]) or 'none'}); see --help")
    command, root = argv[1], pathlib.Path(FLAGS.root).expanduser().resolve()
    if command == "setup":
        from tools.fql_peer import install

        install.setup(FLAGS.fql_source, root, FLAGS.python)
    elif command == "run":
        from tools.fql_peer import peer

        _required(task=FLAGS.task, data_dir=FLAGS.data_dir, out=FLAGS.out)
        result = peer.run(root, FLAGS.task, FLAGS.seed, pathlib.Path(FLAGS.data_dir), pathlib.Path(FLAGS.out),
                          budget_from_flags())
        print(peer.summary_line(result))
    elif command == "compare":
        from tools.fql_peer import compare

        _required(tasks=FLAGS.tasks, data_dir=FLAGS.data_dir, out=FLAGS.out)
        try:
            seeds = [int(seed) for seed in FLAGS.seeds]
        except ValueError as error:
            raise UserError(f"--seeds={','.join(FLAGS.seeds)}: give integers, e.g. 0,1,2") from error
        compare.compare(root, FLAGS.tasks, seeds, pathlib.Path(FLAGS.data_dir), pathlib.Path(FLAGS.out),
                        budget_from_flags(), FLAGS.side_by_side)
    elif command == "pixels":
        from tools.fql_peer import pixels

        _required(out=FLAGS.out)
        budget = budget_from_flags()
        settings = {"seed": FLAGS.seed, "alpha": budget.alpha, "hidden_dims": list(budget.hidden_dims),
                    "batch_size": budget.batch_size, "image_size": FLAGS.image_size, "frame_stack": FLAGS.frame_stack,
                    "action_dim": 5, "updates": FLAGS.updates}
        print(pixels.compare_pixels(root, settings, pathlib.Path(FLAGS.out)))
    else:
        from tools.fql_peer import compare

        _required(out=FLAGS.out)
        print(compare.write_table(pathlib.Path(FLAGS.out)))


if __name__ == "__main__":
    define_flags()
    cli.run(main, sys.modules[__name__])
