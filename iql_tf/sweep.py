"""Run many experiments on Ray: `python -m iql_tf.sweep --gin_file=CONFIG --grid="BINDING=[V1, V2]" --seeds=0-9
--root=DIR` (or `iql-sweep`).

Every combination of the `--grid` values, times every seed, is an ordinary run directory,
`ROOT/NAME=VALUE,.../seedN`, trained by the same code path as `iql_tf.train` (resumable on its own), as a Ray
task with `--cpus_per_run` CPUs (and `--gpus_per_run`, a fraction of a GPU where there is one). Without
`--ray_address` a local Ray starts on this machine (nothing to set up), listening on loopback (127.0.0.1)
only: Ray's servers run whatever code they are sent, so nothing outside this machine may reach them.
`--ray_address=auto` (or `ray://HOST:PORT`) submits to a running cluster, whose machines must all see `--root`
(shared storage) and have iql-tf installed; that cluster's network is its owner's to keep private.

Re-running the same command skips finished runs and resumes unfinished ones. Ctrl-C asks every running run
to stop (each saves a checkpoint first) and waits for them. Progress: one line per finished run and a bar.

    python -m iql_tf.sweep --gin_file=quickstart --grid="IQLAgent.expectile=[0.5, 0.7, 0.9]" --seeds=0-2 \\
        --root=runs/expectile
    python -m iql_tf.report runs/expectile
"""

import ast
import dataclasses
import ipaddress
import itertools
import os
import pathlib
import re
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gin
from absl import flags, logging

from iql_tf import cli, config, run_files, stopping
from iql_tf.errors import UserError
from iql_tf.settings import AgentSettings, DataSettings, RunSettings

FLAGS = flags.FLAGS
_COMMAND_STARTED = time.time()  # the sweep's summary reports the command's whole wall time, Ray's start included
# Ray's single-machine mode: its node address is 127.0.0.1 and every server it starts (GCS, raylet, workers,
# the runtime-env agent) listens there. Read by Ray when it is imported; meant for macOS and Windows, it is
# also the only documented way to keep a local Ray on loopback on Linux.
_RAY_SINGLE_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Settings that reach Ray's workers on this machine (a cluster's workers use their own environment).
_PASSED_ENVIRONMENT = ("MINARI_DATASETS_PATH", "IQL_TF_DATA_DIR", "IQL_TF_CACHE_DIR", "TF_CPP_MIN_LOG_LEVEL")


def define_flags() -> None:
    config.define_gin_flags()
    flags.adopt_module_key_flags(config)
    flags.DEFINE_multi_string("grid", [], "BINDING=[VALUE, ...] (Python literals, as in gin), repeatable: every "
                              "combination is trained, e.g. --grid=\"IQLAgent.expectile=[0.7, 0.9]\".")
    flags.DEFINE_string("seeds", "0", "Seeds of every combination: 0-9, or 0,3,5.")
    flags.DEFINE_string("root", None, "Where the runs go (shared storage for a cluster).")
    flags.DEFINE_string("ray_address", None, "A running Ray cluster (auto, or ray://HOST:PORT); default: a local one.")
    flags.DEFINE_float("cpus_per_run", 1.0, "CPUs Ray reserves for each run (TensorFlow uses that many threads).")
    flags.DEFINE_float("gpus_per_run", 0.0, "GPUs (or a fraction of one) Ray reserves for each run.")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: where it goes and how it is configured."""

    name: str  # ROOT-relative directory: NAME=VALUE,.../seedN
    gin_files: Tuple[str, ...]
    bindings: Tuple[str, ...]  # the sweep's --gin_bindings, then the grid's, then the seed
    hparams: Tuple[Tuple[str, Any], ...]  # the swept bindings and the seed, for TensorBoard's HParams tab

    def to_json(self) -> Dict[str, Any]:
        return {"gin_files": list(self.gin_files), "bindings": list(self.bindings), "hparams": dict(self.hparams)}


def parse_seeds(text: str) -> List[int]:
    """0-9 or 0,3,5; duplicates and negatives are UserErrors."""
    try:
        seeds: List[int] = []
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            seeds += list(range(int(first), int(last) + 1)) if last else [int(first)]
    except ValueError as error:
        raise UserError(f"--seeds={text!r}: expected 0-9 or 0,3,5") from error
    duplicates = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if duplicates:
        raise UserError(f"--seeds={text!r} names seed(s) {duplicates} more than once")
    if not seeds or min(seeds) < 0:
        raise UserError(f"--seeds={text!r}: give non-negative seeds, e.g. 0-9")
    return seeds


def parse_grid(entries: Sequence[str]) -> List[Tuple[str, List[Any]]]:
    """[(binding, values)] from BINDING=[V1, V2] entries."""
    grid = []
    for entry in entries:
        name, separator, values = entry.partition("=")
        name = name.strip()
        if not separator or not re.fullmatch(r"[\w.]+\.\w+", name):
            raise UserError(f"--grid={entry!r}: expected BINDING=[VALUE, ...], e.g. IQLAgent.expectile=[0.7, 0.9]")
        try:
            parsed = ast.literal_eval(values.strip())
        except (ValueError, SyntaxError) as error:
            raise UserError(f"--grid={entry!r}: the values are not a list of Python literals ({error})") from error
        if not isinstance(parsed, (list, tuple)) or not parsed:
            raise UserError(f"--grid={entry!r}: give a non-empty list of values, e.g. {name}=[0.7, 0.9]")
        if name == "train.seed":
            raise UserError("--grid over train.seed: use --seeds")
        if name in (other for other, _ in grid):
            raise UserError(f"--grid names {name} twice: put all its values in one list")
        grid.append((name, list(parsed)))
    return grid


def plan(gin_files: Sequence[str], bindings: Sequence[str], grid: List[Tuple[str, List[Any]]],
         seeds: Sequence[int]) -> List[RunSpec]:
    """Every combination of the grid, times every seed, each checked to parse as gin before anything runs."""
    for binding in bindings:
        if re.match(r"\s*train\.seed\s*=", binding):
            raise UserError(f"--gin_bindings {binding!r}: the sweep sets train.seed itself; use --seeds")
    names = [name for name, _ in grid]
    specs = []
    for values in itertools.product(*[values for _, values in grid]):
        assignments = [f"{name} = {value!r}" for name, value in zip(names, values)]
        folder = ",".join(f"{name.rsplit('.', 1)[-1]}={_slug(value)}" for name, value in zip(names, values)) or "run"
        for seed in seeds:
            spec = RunSpec(f"{folder}/seed{seed}", tuple(gin_files), tuple(bindings) + tuple(assignments)
                           + (f"train.seed = {seed}",),
                           tuple((name, _hparam(value)) for name, value in zip(names, values)) + (("train.seed", seed),))
            specs.append(spec)
    try:
        for spec in specs:  # every run parses (unknown names, values gin cannot read) and holds valid settings
            gin.clear_config()
            try:
                config.parse_gin(spec.gin_files, spec.bindings)
                DataSettings(), AgentSettings(), RunSettings()
            except UserError as error:
                raise UserError(f"{spec.name}: {str(error).splitlines()[0]}") from error
    finally:
        gin.clear_config()
    folders = [spec.name for spec in specs]
    if len(set(folders)) != len(folders):
        raise UserError("two grid combinations give the same run directory name; use values that differ in their "
                        "text")
    return specs


def _slug(value: Any) -> str:
    text = pathlib.Path(value).stem if isinstance(value, str) and ("/" in value and "." in value) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "empty"


def _hparam(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) else repr(value)


def check_root(root: pathlib.Path, specs: Sequence[RunSpec]) -> None:
    """A run directory already in ROOT must hold the run this sweep would train there."""
    for spec in specs:
        recorded = run_files.RunFiles(root / spec.name).sweep_run()
        if recorded is not None and recorded != spec.to_json():
            raise UserError(f"{root / spec.name} holds a run of another configuration ({recorded.get('bindings')} vs "
                            f"{list(spec.bindings)}); use another --root, or the sweep command that made it")


def is_finished(root: pathlib.Path, spec: RunSpec) -> bool:
    """A run is finished when its finished.json holds a finished run's record; a damaged one is trained again
    (it resumes from its last checkpoint and writes the record anew)."""
    try:
        return run_files.RunFiles(root / spec.name).finished() is not None
    except UserError as error:
        logging.warning("%s: training it again", error)
        return False


def train_one(spec_json: Dict[str, Any], name: str, root: str, threads: int) -> Dict[str, Any]:
    """A Ray task: trains (or resumes) one run. Never raises for the run's own failures: returns them."""
    import tensorflow as tf

    try:  # before TensorFlow starts its thread pools; a reused worker has them already
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass
    import gin

    from iql_tf import quiet, trainer

    quiet.quiet_tensorflow()
    files, stop_file = run_files.RunFiles(pathlib.Path(root) / name), pathlib.Path(root) / run_files.STOP
    if stop_file.exists():
        return {"name": name, "status": "stopped", "step": None}
    try:
        gin.clear_config()
        config.parse_gin(spec_json["gin_files"], spec_json["bindings"])
        files.path.mkdir(parents=True, exist_ok=True)
        if files.sweep_run() is None:
            files.write_sweep_run(spec_json)
        results = trainer.run_training(files.path, hparams=spec_json["hparams"], stop_files=[str(stop_file)])
        return {"name": name, "status": "finished", "results": results}
    except stopping.RunStopped as stopped:
        return {"name": name, "status": "stopped", "step": stopped.step}
    except UserError as error:
        return {"name": name, "status": "failed", "error": str(error).splitlines()[0]}
    finally:
        gin.clear_config()


def run_sweep(specs: Sequence[RunSpec], root: pathlib.Path, ray_address: Optional[str], cpus_per_run: float,
              gpus_per_run: float, progress: bool = True) -> List[Dict[str, Any]]:
    """Trains the unfinished runs as Ray tasks; returns one outcome per run (finished ones: 'skipped')."""
    import tqdm

    check_root(root, specs)
    finished = {spec.name for spec in specs if is_finished(root, spec)}
    outcomes = [{"name": spec.name, "status": "skipped"} for spec in specs if spec.name in finished]
    pending = [spec for spec in specs if spec.name not in finished]
    _write_hparams_config(root, specs)
    if not pending:
        return outcomes
    (root / run_files.STOP).unlink(missing_ok=True)
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else (lambda line: None)
    say(f"starting a local Ray on 127.0.0.1 for {len(pending)} run(s)" if ray_address is None
        else f"connecting to the Ray cluster at {ray_address} for {len(pending)} run(s)")
    started = time.perf_counter()
    init_ray(ray_address)
    import ray

    try:
        task = ray.remote(train_one).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        threads = max(1, int(cpus_per_run))
        unfinished = {task.remote(spec.to_json(), spec.name, str(root), threads): spec for spec in pending}
        cpus = int(ray.cluster_resources().get("CPU", 0))
        say(f"Ray ready in {time.perf_counter() - started:.0f} s: {len(pending)} run(s) queued, {cpus_per_run:g} CPU(s) "
            f"each on {cpus} CPU(s); each worker imports TensorFlow before its first run (a minute or so on a small "
            "machine); a line per finished run follows")
        bar = tqdm.tqdm(total=len(specs), initial=len(outcomes), unit="run", disable=not progress, file=sys.stderr)
        # Ctrl-C only sets a flag, checked between short waits: Ray's waits take pending signals as an
        # interruption of their own, so a KeyboardInterrupt raised inside ray.wait can be lost.
        interrupted = threading.Event()
        previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
        try:
            while unfinished and not interrupted.is_set():
                done, _ = ray.wait(list(unfinished), num_returns=1, timeout=0.2)
                for ref in done:
                    unfinished.pop(ref)
                    outcome = ray.get(ref)
                    outcomes.append(outcome)
                    bar.write(_line(outcome))
                    bar.update(1)
            if interrupted.is_set():
                signal.signal(signal.SIGINT, previous_handler)  # a second Ctrl-C no longer waits for the checkpoints
                bar.write(f"stopping {len(unfinished)} unfinished run(s): running ones save a checkpoint first")
                (root / run_files.STOP).touch()  # every run watches it; runs that have not started return at once
                stopped = ray.get(list(unfinished))
                outcomes += stopped
                for outcome in stopped:
                    bar.write(_line(outcome))
                raise KeyboardInterrupt
        finally:
            signal.signal(signal.SIGINT, previous_handler)
            (root / run_files.STOP).unlink(missing_ok=True)
        bar.close()
    finally:
        ray.shutdown()
    return outcomes


def init_ray(address: Optional[str]) -> None:
    """Connects to the cluster at `address`, or starts a local Ray whose servers listen on loopback only (the
    dashboard off); refuses to go on if Ray was imported before this could ask it for that."""
    if address is None:
        os.environ[_RAY_SINGLE_NODE] = "0"
    import ray

    environment = {name: os.environ[name] for name in _PASSED_ENVIRONMENT if name in os.environ}
    # "local": a new Ray here, whatever RAY_ADDRESS or the last cluster recorded in /tmp/ray say.
    ray.init(address="local" if address is None else address, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True, runtime_env={"env_vars": environment} if address is None else None)
    if address is None and not ipaddress.ip_address(ray.util.get_node_ip_address()).is_loopback:
        ray.shutdown()
        raise UserError(f"the local Ray would listen on {ray.util.get_node_ip_address()}, not only on loopback: "
                        f"Ray was imported before the sweep could set {_RAY_SINGLE_NODE}=0; set it in the "
                        "environment, or start Ray yourself and pass --ray_address")


def _line(outcome: Dict[str, Any]) -> str:
    if outcome["status"] == "finished":
        headline = ", ".join(f"{name} {value:.3g}" for name, value in outcome["results"][0].items()
                             if name in ("success_rate", "normalized_score", "return_mean"))
        return f"finished {outcome['name']}: {headline or 'no evaluation'}"
    if outcome["status"] == "stopped":
        if outcome["step"] is None:
            return f"stopped {outcome['name']} before it started"
        return f"stopped {outcome['name']} at step {outcome['step']} (re-run the sweep to resume)"
    return f"failed {outcome['name']}: {outcome.get('error')}"


def _write_hparams_config(root: pathlib.Path, specs: Sequence[RunSpec]) -> None:
    """The HParams tab's experiment at ROOT: the swept bindings and seed, and the final scores as metrics."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    values: Dict[str, set] = {}
    for spec in specs:
        for name, value in spec.hparams:
            values.setdefault(name, set()).add(value)
    root.mkdir(parents=True, exist_ok=True)
    # At ROOT itself, so that TensorBoard lists no pseudo-run beside the runs.
    with tf.summary.create_file_writer(str(root)).as_default():
        hp.hparams_config(
            hparams=[hp.HParam(name, hp.Discrete(sorted(options, key=str))) for name, options in values.items()],
            metrics=[hp.Metric(f"eval/{name}") for name in ("success_rate", "normalized_score", "return_mean")],
        )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}")
    if not FLAGS.gin_file:
        raise UserError("--gin_file is required, e.g. --gin_file=quickstart")
    if not FLAGS.root:
        raise UserError("--root is required: the folder the runs go to (shared storage on a cluster)")
    if FLAGS.cpus_per_run <= 0 or FLAGS.gpus_per_run < 0:
        raise UserError("--cpus_per_run must be positive and --gpus_per_run non-negative")
    from iql_tf import quiet

    quiet.quiet_tensorflow()
    specs = plan(FLAGS.gin_file, FLAGS.gin_bindings, parse_grid(FLAGS.grid), parse_seeds(FLAGS.seeds))
    root = pathlib.Path(FLAGS.root)
    try:
        outcomes = run_sweep(specs, root, FLAGS.ray_address, FLAGS.cpus_per_run, FLAGS.gpus_per_run)
    except KeyboardInterrupt:
        print("stopped; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
    counts = {status: sum(o["status"] == status for o in outcomes) for status in ("finished", "skipped", "failed")}
    print(f"{len(specs)} runs in {root}: {counts['finished']} trained, {counts['skipped']} already finished, "
          f"{counts['failed']} failed (wall time {time.time() - _COMMAND_STARTED:.0f} s); summarise with "
          f"`python -m iql_tf.report {root}`")
    if counts["failed"]:
        sys.exit(1)


def run() -> None:
    """The `iql-sweep` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
