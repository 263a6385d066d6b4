"""The full-budget OGBench reproduction of one family: its five tasks x seeds at the FQL paper's IQL settings
(1M updates, 4 x 256 networks for manipulation, 4 x 512 for locomotion), then the report.

    python -m tools.ogbench_reproduction --family=cube-single --seeds=0-7 --root=runs/ogbench/cube-single
    python -m tools.ogbench_reproduction --family=scene --seeds=0-7 --root=runs/ogbench/scene \\
        --ray_address=auto --gpus_per_run=0.25          # on a Ray cluster, four runs per GPU

One command, three steps, each resumable (re-run it after an interruption):
  1. the family's dataset: left as it is when OGBench's files are in --ogbench_dir; a manipulation play dataset
     is generated there otherwise, at OGBench's size (`iql-generate --kind=ogbench`); other datasets must be
     downloaded (pass --download on a connected machine);
  2. `iql-sweep --gin_file=ogbench` over `ogbench:FAMILY-KIND-singletask-task{1..5}-v0` x --seeds, with the
     family's AWR temperature and discount (FQL paper, Tables 5 and 6) bound;
  3. `iql-report ROOT --last_evaluations=3`: per task and over the five tasks, OGBench's score (the mean success
     of the last three evaluations, 800k-1M), to hold against the FQL paper's IQL in docs/reference_scores.md.
On a 2-core CPU one run takes about a day; this is for a GPU or a cluster (docs/ogbench.md).

A visual family (`--family=visual-cube-single`) runs the same tasks seen through OGBench's camera with the FQL
repository's visual settings (its README's visual IQL command): 500k updates, impala_small encoders, p_aug 0.5,
three stacked frames, its default 4 x 512 networks, the state family's temperature (the FQL repository gives
visual IQL's only for visual-cube-single: 1, the same). Its play dataset is rendered by MuJoCo while generated
(set MUJOCO_GL=egl on a GPU, or osmesa on a CPU; about 6 frames/s on a CPU core, so a 1M-frame dataset is days
of CPU and meant for a GPU machine), and so is every evaluation episode (in a process of its own).
"""

import dataclasses
import subprocess
import sys
from typing import List, Sequence

from absl import flags

from iql_tf import cli, envs
from iql_tf.data import ogbench_source
from iql_tf.errors import UserError

FLAGS = flags.FLAGS
MANIPULATION, LOCOMOTION = (256,) * 4, (512,) * 4  # FQL paper, Appendix E.2: IQL overfits manipulation at 512


@dataclasses.dataclass(frozen=True)
class Family:
    """What the FQL paper's IQL used on a family: dataset kind, AWR temperature (its alpha), discount, networks."""

    kind: str
    beta: float
    discount: float = 0.99
    hidden_dims: tuple = MANIPULATION


# FQL paper (arXiv 2502.02538), Table 6 (IQL alpha per family, tuned on the default task) and Table 5 (discount
# 0.995 for antmaze-giant, humanoidmaze and antsoccer). antsoccer's offline alpha is not in Table 6: 1, from
# Table 7 (offline-to-online, same agent).
FQL_IQL_SETTINGS = {
    "cube-single": Family("play", 1.0),
    "cube-double": Family("play", 0.3),
    "scene": Family("play", 10.0),
    "puzzle-3x3": Family("play", 10.0),
    "puzzle-4x4": Family("play", 3.0),
    "antmaze-large": Family("navigate", 10.0, hidden_dims=LOCOMOTION),
    "antmaze-giant": Family("navigate", 10.0, 0.995, LOCOMOTION),
    "humanoidmaze-medium": Family("navigate", 10.0, 0.995, LOCOMOTION),
    "humanoidmaze-large": Family("navigate", 10.0, 0.995, LOCOMOTION),
    "antsoccer-arena": Family("navigate", 1.0, 0.995, LOCOMOTION),
}


# The FQL repository's visual IQL (README, "IQL on OGBench visual-cube-single"): what a visual family adds.
VISUAL_BINDINGS = ("train.num_offline_steps = 500000", "IQLAgent.encoder = 'impala_small'",
                   "IQLAgent.shared_encoder = False", "IQLAgent.augmentation_probability = 0.5",
                   "make_dataset.frame_stack = 3")
VISUAL = ogbench_source.VISUAL


def family_settings(family: str) -> Family:
    """The FQL paper's settings of a family, or of the state family of a visual one (with 4 x 512 networks)."""
    visual = family.startswith(VISUAL)
    state_family = family[len(VISUAL):] if visual else family
    if state_family not in FQL_IQL_SETTINGS or visual and state_family not in ogbench_source.VISUAL_FAMILIES:
        known = list(FQL_IQL_SETTINGS) + [VISUAL + name for name in FQL_IQL_SETTINGS
                                          if name in ogbench_source.VISUAL_FAMILIES]
        raise UserError(f"--family={family!r} is unknown; families: {', '.join(known)}")
    settings = FQL_IQL_SETTINGS[state_family]
    return dataclasses.replace(settings, hidden_dims=LOCOMOTION) if visual else settings


def sweep_command(family: str, seeds: str, root: str, ogbench_dir: str, extra: Sequence[str] = ()) -> List[str]:
    """The `iql-sweep` command line of a family's five tasks."""
    settings = family_settings(family)
    tasks = [f"ogbench:{family}-{settings.kind}-singletask-task{task}-v0" for task in range(1, 6)]
    visual = [f"--gin_bindings={binding}" for binding in VISUAL_BINDINGS] if family.startswith(VISUAL) else []
    return [sys.executable, "-m", "iql_tf.sweep", "--gin_file=ogbench", f"--grid=make_dataset.source={tasks!r}",
            f"--seeds={seeds}", f"--root={root}",
            f"--gin_bindings=make_dataset.ogbench_dir = {ogbench_dir!r}",
            f"--gin_bindings=IQLAgent.beta = {settings.beta!r}",
            f"--gin_bindings=IQLAgent.discount = {settings.discount!r}",
            f"--gin_bindings=IQLAgent.hidden_dims = {settings.hidden_dims!r}", *visual, *extra]


def ensure_dataset(family: str, ogbench_dir: str, download: bool) -> None:
    """OGBench's files of the family's dataset in `ogbench_dir`: there, generated, or downloaded."""
    name = ogbench_source.parse(f"ogbench:{family}-{family_settings(family).kind}-singletask-v0")
    train, val = name.files(ogbench_dir)
    if train.is_file() and val.is_file():
        print(f"dataset: {train} and {val.name} are there", flush=True)
        return
    if family_settings(family).kind == "play":
        print(f"dataset: generating {name.dataset} at OGBench's size into {ogbench_dir}", flush=True)
        _run([sys.executable, "-m", "iql_tf.generate", "--kind=ogbench", f"--dataset_id={name.dataset}",
              f"--ogbench_dir={ogbench_dir}", "--overwrite"])  # a lone file is what an interrupted run left
        return
    ogbench_source.split_files(name, ogbench_dir, download)  # downloads, or says how to get it


def _run(command: List[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    status = subprocess.call(command)
    if status != 0:
        sys.exit(status)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}")
    family_settings(FLAGS.family)  # a known family
    if not FLAGS.root:
        raise UserError("--root is required: the folder the runs and the report go to")
    envs.require_ogbench("tools.ogbench_reproduction")
    ensure_dataset(FLAGS.family, FLAGS.ogbench_dir, FLAGS.download)
    extra = [f"--cpus_per_run={FLAGS.cpus_per_run}", f"--gpus_per_run={FLAGS.gpus_per_run}"]
    if FLAGS.ray_address:
        extra.append(f"--ray_address={FLAGS.ray_address}")
    extra += [f"--gin_bindings={binding}" for binding in FLAGS.gin_bindings]
    _run(sweep_command(FLAGS.family, FLAGS.seeds, FLAGS.root, FLAGS.ogbench_dir, extra))
    _run([sys.executable, "-m", "iql_tf.report", FLAGS.root, "--last_evaluations=3"])
    print(f"compare {FLAGS.root}/report/report.md with the FQL paper's IQL in docs/reference_scores.md", flush=True)


def define_flags() -> None:
    flags.DEFINE_string("family", "cube-single", f"OGBench family: {', '.join(FQL_IQL_SETTINGS)}, or visual- and "
                        "one of them that OGBench has through a camera (visual-cube-single, ...).")
    flags.DEFINE_string("seeds", "0-7", "Seeds of every task (the FQL paper: 8).")
    flags.DEFINE_string("root", None, "Where the runs and the report go.")
    flags.DEFINE_string("ogbench_dir", ogbench_source.DEFAULT_DATA_DIR, "The folder of OGBench's files.")
    flags.DEFINE_bool("download", False, "Download a dataset that is missing and cannot be generated here.")
    flags.DEFINE_string("ray_address", None, "A running Ray cluster (auto, or ray://HOST:PORT); default: local.")
    flags.DEFINE_float("cpus_per_run", 1.0, "CPUs Ray reserves for each run.")
    flags.DEFINE_float("gpus_per_run", 0.0, "GPUs (or a fraction) Ray reserves for each run.")
    flags.DEFINE_multi_string("gin_bindings", [], "More bindings for every run (e.g. a shorter budget).")


if __name__ == "__main__":
    define_flags()
    cli.run(main, sys.modules[__name__])
