"""Generate an offline dataset into the local Minari root: `python -m iql_tf.generate` (or `iql-generate`).
No download, no jax; seeded and deterministic.

    python -m iql_tf.generate                # the quickstart's PointMaze stitching dataset
    python -m iql_tf.generate --kind=random --env_id=Hopper-v5 --num_steps=100000 --dataset_id=me/hopper/random-v0
    python -m iql_tf.generate --kind=policy --policy=runs/x/export/policy --noise_std=0.1 \\
        --dataset_id=me/hopper/iql-noisy-v0
    python -m iql_tf.generate --kind=ogbench --dataset_id=cube-single-play-v0 --num_episodes=1000
    python -m iql_tf.generate --rlds_dir=data/umaze-rlds     # also written as RLDS (tfds.builder_from_directory)

`--kind=ogbench` writes one of OGBench's manipulation play datasets with its scripted oracles, in OGBench's
own files (`NAME.npz`, `NAME-val.npz`) in `--ogbench_dir`, where the `ogbench:` source reads them
(`iql_tf/generation/ogbench_play.py`; needs the `ogbench` extra).

Datasets are written with `minari.create_dataset_from_buffers`, atomically, with the evaluation env spec and
reference scores (a random policy for ref_min_score; the noiseless planner or source policy for
ref_max_score), measured like a trained policy, so that normalised scores work (`iql_tf/generation/`).
"""

import pathlib
import re
import sys
from typing import Optional, Sequence

import minari
from absl import flags

from iql_tf import cli, envs
from iql_tf.data import ogbench_source
from iql_tf.errors import UserError
from iql_tf.generation import generators, ogbench_play, pointmaze

FLAGS = flags.FLAGS


def generate_from_flags(kind: str, dataset_id: Optional[str], num_steps: int, seed: int, overwrite: bool,
                        env_id: Optional[str], env_kwargs: str, policy: Optional[str], noise_std: float,
                        reference_episodes: int, maze: str = "umaze", trust_export: bool = False
                        ) -> minari.MinariDataset:
    """What the command line asks for (but --kind=ogbench), with a UserError for each missing or conflicting
    flag."""
    common = dict(num_steps=num_steps, seed=seed, overwrite=overwrite, num_reference_episodes=reference_episodes)
    if kind == "pointmaze":
        return generators.generate_pointmaze(dataset_id, maze=maze, **common)
    if not dataset_id:
        raise UserError(f"--kind={kind} needs --dataset_id (e.g. me/hopper/{kind}-v0)")
    if kind == "random":
        if not env_id:
            raise UserError("--kind=random needs --env_id (any gymnasium env id, e.g. Hopper-v5)")
        return generators.generate_random(dataset_id, env_id, envs.parse_env_kwargs(env_kwargs), **common)
    if not policy:
        raise UserError("--kind=policy needs --policy=DIR/export/policy")
    return generators.generate_policy(dataset_id, policy, noise_std, **common, trust_export=trust_export)


def generate_ogbench_from_flags(dataset_id: Optional[str], ogbench_dir: Optional[str], num_episodes: Optional[int],
                                episode_steps: int, seed: int, processes: Optional[int], overwrite: bool) -> None:
    """--kind=ogbench: OGBench's play dataset `dataset_id`, generated with its oracles into `ogbench_dir`."""
    envs.require_ogbench("--kind=ogbench")
    if not dataset_id:
        raise UserError(f"--kind=ogbench needs --dataset_id, one of {', '.join(ogbench_play.PLAY_DATASETS)}")
    ogbench_play.generate(dataset_id, ogbench_dir or ogbench_source.DEFAULT_DATA_DIR, num_episodes, episode_steps,
                          seed, processes, overwrite)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}")
    if FLAGS.kind == "ogbench":
        if FLAGS.rlds_dir is not None:
            raise UserError("--rlds_dir with --kind=ogbench: OGBench's files are written in OGBench's own format; "
                            "convert them to RLDS another way, or drop --rlds_dir")
        generate_ogbench_from_flags(FLAGS.dataset_id, FLAGS.ogbench_dir, FLAGS.num_episodes, FLAGS.episode_steps,
                                    FLAGS.seed, FLAGS.processes, FLAGS.overwrite)
        return
    if FLAGS.rlds_dir is not None:
        from iql_tf.data import rlds_source

        rlds_source.tfds_module()  # the extra checked before anything is generated
        if pathlib.Path(FLAGS.rlds_dir).expanduser().exists():
            raise UserError(f"--rlds_dir={FLAGS.rlds_dir}: already exists; choose a new folder or delete it first")
    dataset = generate_from_flags(FLAGS.kind, FLAGS.dataset_id, FLAGS.num_steps, FLAGS.seed, FLAGS.overwrite,
                                  FLAGS.env_id, FLAGS.env_kwargs, FLAGS.policy, FLAGS.noise_std,
                                  FLAGS.reference_episodes, FLAGS.maze, FLAGS.trust_export)
    if FLAGS.rlds_dir is not None:
        write_rlds(dataset.spec.dataset_id, FLAGS.rlds_dir)


def write_rlds(dataset_id: str, directory: str) -> None:
    """The generated Minari dataset, as the transitions training reads from it, also written as RLDS."""
    from iql_tf.data import rlds_writer, sources, validation

    report = validation.Report()
    data = sources.read(sources.resolve(dataset_id), report)
    report.raise_first(dataset_id)
    name = re.sub(r"[^a-z0-9_]+", "_", dataset_id.lower()).strip("_")
    folder, episodes = rlds_writer.write_transitions(data.transitions, directory, name)
    print(f"wrote {dataset_id} as RLDS to {folder}: {episodes} episodes (open it with "
          f"tfds.builder_from_directory('{folder}'), or train on rlds:{folder})")


def define_flags() -> None:
    flags.DEFINE_enum("kind", "pointmaze", ["pointmaze", "random", "policy", "ogbench"], "Which generator to run.")
    flags.DEFINE_string("dataset_id", None, "Minari id to write (default for pointmaze: iql_tf/pointmaze/MAZE-stitch-v0"
                        "); for ogbench, OGBench's dataset name, e.g. cube-single-play-v0 or scene-play-v0.")
    flags.DEFINE_enum("maze", "umaze", list(pointmaze.TASKS), "pointmaze: which maze (the quickstart's is umaze).")
    flags.DEFINE_integer("num_steps", generators.DEFAULT_NUM_STEPS, "Transitions to generate.")
    flags.DEFINE_integer("seed", 0, "Seed of everything random in the generation.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing dataset with the same id.")
    flags.DEFINE_string("env_id", None, "random: the gymnasium env id.")
    flags.DEFINE_string("env_kwargs", "{}", "random: JSON object of env kwargs.")
    flags.DEFINE_string("policy", None, "policy: exported SavedModel directory (DIR/export/policy).")
    flags.DEFINE_float("noise_std", 0.1, "policy: std of the Gaussian action noise.")
    flags.DEFINE_bool("trust_export", False, "policy: load an export that runs ops iql-tf's exports never use (it "
                      "may do anything: only for exports you trust).")
    flags.DEFINE_string("ogbench_dir", None, "ogbench: the folder of OGBench's files (default: OGBench's own, "
                        f"{ogbench_source.DEFAULT_DATA_DIR}).")
    flags.DEFINE_integer("num_episodes", None, "ogbench: training episodes (default: OGBench's size, e.g. 1000); a "
                         "tenth as many validation episodes are added.")
    flags.DEFINE_integer("episode_steps", ogbench_play.EPISODE_STEPS, "ogbench: steps per episode (OGBench's "
                         f"{ogbench_play.EPISODE_STEPS}: {ogbench_play.EPISODE_STEPS - 1} transitions).")
    flags.DEFINE_integer("processes", None, "ogbench: worker processes (default: one per core).")
    flags.DEFINE_string("rlds_dir", None, "Also write the generated dataset as RLDS (TFDS's format) into this new "
                        "folder (not with --kind=ogbench; needs the rlds extra).")
    flags.DEFINE_integer("reference_episodes", generators.DEFAULT_REFERENCE_EPISODES,
                         "Evaluation episodes averaged for each reference score.")


def run() -> None:
    """The `iql-generate` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
