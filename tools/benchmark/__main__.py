"""Speed of the IQL update beside reference implementations: `python -m tools.benchmark`.

Runs, in this one process and one after another (needs the `bench` extra: jax, flax, optax, torch):
- per observation/action shape (hopper 11/3, halfcheetah 17/6, antmaze 29/8) at 2x256 and batch 256: the JAX
  update fused K times in one `lax.scan` (the baseline of its group), JAX's one jitted update per call (the
  authors' structure, batches drawn on the host), PyTorch eager (CORL's style), and iql-tf's update fused K
  times and one per call, with XLA and with TensorFlow's kernels;
- the whole `iql_tf.trainer` loop with its defaults (it times and picks the compiled path itself) on a
  1M-transition synthetic locomotion dataset, logging and checkpointing on, evaluation off;
- several seeds in one compiled step (`train.num_seeds`), as seed-updates per second against one seed;
- the exported policy: batch-1 latency of the SavedModel, the TFLite and the ONNX model, throughput at batch 256;
- fitted Q evaluation's update (one Q network and its target) against the IQL update (four networks), fused alike.
- one online fine-tuning step (exploration, a PointMaze step, the transition appended, one update) against the
  bare single update.
The rows of a group are timed in interleaved rounds, and every rate carries its ratio to the first row of its
group. Writes DIR/benchmark.md and DIR/benchmark.json. Speed is quoted as ratios between rows of one run: other
load on the machine shifts all rows alike.
"""

import math
import pathlib
import platform
import sys
import time
from typing import Dict, List, Sequence

from absl import flags, logging

from iql_tf import cli, files
from iql_tf.errors import UserError

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("shapes", ["hopper", "halfcheetah", "antmaze"], "Observation/action shapes to time.")
    flags.DEFINE_list("hidden_dims", ["256", "256"], "Hidden sizes of every network.")
    flags.DEFINE_integer("batch_size", 256, "Batch size.")
    flags.DEFINE_integer("fused_updates", 200, "Updates per call of the fused rows (K).")
    flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds per row.")
    flags.DEFINE_float("seconds", 1.0, "Length of one timing round of a row.")
    flags.DEFINE_list("frameworks", ["iql_tf", "jax", "torch"], "Which implementations to time.")
    flags.DEFINE_integer("loop_updates", 6000, "Updates of the whole-loop row (0: skip it).")
    flags.DEFINE_integer("loop_transitions", 1_000_000, "Size of the whole loop's synthetic dataset.")
    flags.DEFINE_list("ensembles", ["64x64:8", "256x256:4"],
                      "Networks and seed counts of the many-seeds rows: SIZExSIZE:SEEDS, comma-separated.")
    flags.DEFINE_bool("online", True, "Time the online fine-tuning step against the bare single update.")
    flags.DEFINE_bool("fqe", True, "Time fitted Q evaluation's update against the IQL update.")
    flags.DEFINE_integer("serving_calls", 2000, "Timed batch-1 calls of the exported policy (0: skip).")
    flags.DEFINE_string("output_dir", "runs/benchmark", "Where benchmark.md and benchmark.json go.")


def run_benchmark(shapes: Sequence[str], hidden: Sequence[int], batch_size: int, fused: int, rounds: int,
                  seconds: float, frameworks: Sequence[str], loop_updates: int, loop_transitions: int,
                  ensembles: Sequence[str], online: bool, serving_calls: int, fqe: bool = True) -> list:
    from iql_tf import fastest_path
    from tools.benchmark import measure

    unknown = sorted(set(shapes) - set(measure.SHAPES)) + sorted(set(frameworks) - {"iql_tf", "jax", "torch"})
    if unknown:
        raise UserError(f"unknown --shapes / --frameworks {unknown}; shapes: {', '.join(measure.SHAPES)}; "
                        "frameworks: iql_tf, jax, torch")
    size = "x".join(map(str, hidden))
    rows = []

    def add(group: str, name: str, value: float, unit: str = "updates/s", baseline: bool = False) -> None:
        rows.append(measure.Row(group, name, value, unit, baseline))
        logging.info("%s | %s: %.4g %s", group, name, value, unit)

    def add_race(group: str, calls: Dict[str, tuple], unit: str = "updates/s", scale: Dict[str, int] = None
                 ) -> None:
        """Times `calls` in interleaved rounds; the first is the group's baseline."""
        rates = fastest_path.race(calls, rounds, seconds)
        for index, (name, value) in enumerate(rates.items()):
            add(group, name, value * (scale or {}).get(name, 1), unit, baseline=index == 0)

    for shape in shapes:
        data = measure.synthetic_transitions(*measure.SHAPES[shape], 100_000)
        calls = {}
        if "jax" in frameworks:
            calls[f"JAX, {fused} updates in one lax.scan"] = measure.jax_call(data, hidden, batch_size, fused)
            calls["JAX, one jitted update per call"] = measure.jax_call(data, hidden, batch_size, 1)
        if "torch" in frameworks:
            calls["PyTorch eager, one update per call"] = measure.torch_call(data, hidden, batch_size)
        if "iql_tf" in frameworks:
            for jit, path in ((True, "XLA"), (False, "TF kernels")):
                calls[f"iql-tf {path}, {fused} fused updates per call"] = measure.iql_tf_call(
                    data, hidden, batch_size, jit, fused)
                calls[f"iql-tf {path}, one update per call"] = measure.iql_tf_call(data, hidden, batch_size, jit, 1)
        add_race(f"{shape} {size}", calls)
        del calls
    if loop_updates and "iql_tf" in frameworks:
        # Not interleavable with anything: the baseline is timed just before and just after the loop.
        data = measure.synthetic_transitions(*measure.SHAPES[shapes[0]], 100_000)
        framework = "JAX" if "jax" in frameworks else "iql-tf XLA"
        baseline = (measure.jax_call(data, hidden, batch_size, fused) if "jax" in frameworks
                    else measure.iql_tf_call(data, hidden, batch_size, True, fused))
        before = fastest_path.race({"baseline": baseline}, rounds, seconds)["baseline"]
        value, xla = measure.training_loop(*measure.SHAPES[shapes[0]], loop_transitions, loop_updates, hidden)
        after = fastest_path.race({"baseline": baseline}, rounds, seconds)["baseline"]
        group = f"{shapes[0]} {size}, whole training loop"
        add(group, f"{framework}, {fused} fused updates per call (mean of before and after the loop)",
            (before + after) / 2, baseline=True)
        add(group, f"iql-tf whole training loop with its defaults (it chose {'XLA' if xla else 'TF kernels'}; "
            f"{loop_transitions} transitions, logging, checkpoints)", value)
    if "iql_tf" in frameworks:
        for pair in ensembles:
            dims, seeds = _ensemble(pair)
            data = measure.synthetic_transitions(*measure.SHAPES[shapes[0]], 100_000)
            calls, scale = {}, {}
            for count in (1, seeds):
                for jit, path in ((True, "XLA"), (False, "TF kernels")):
                    name = f"{count} seed(s), {path}"
                    calls[name] = measure.iql_tf_call(data, dims, batch_size, jit, max(1, fused // seeds), count)
                    scale[name] = count
            add_race(f"{shapes[0]} {'x'.join(map(str, dims))}, seeds in one compiled step", calls,
                     "seed-updates/s", scale)
    if fqe and "iql_tf" in frameworks:
        data = measure.synthetic_transitions(*measure.SHAPES[shapes[0]], 100_000)
        calls = {}
        for jit, path in ((True, "XLA"), (False, "TF kernels")):
            calls[f"{path}: IQL update, {fused} fused per call"] = measure.iql_tf_call(data, hidden, batch_size, jit,
                                                                                      fused)
            calls[f"{path}: FQE update, {fused} fused per call"] = measure.fqe_call(data, hidden, batch_size, jit,
                                                                                   fused)
        add_race(f"{shapes[0]} {size}, fitted Q evaluation against the IQL update", calls)
    if online and "iql_tf" in frameworks:
        calls = {}
        for jit, path in ((True, "XLA"), (False, "TF kernels")):
            calls[f"{path}: bare update, one per call"] = measure.iql_tf_call(
                measure.synthetic_transitions(8, 2, 100_000), hidden, batch_size, jit, 1)
            calls[f"{path}: online step (exploration, PointMaze step, append, one update)"] = measure.online_call(
                hidden, batch_size, jit)
        add_race(f"pointmaze {size}, online fine-tuning", calls)
    if serving_calls and "iql_tf" in frameworks:
        result = measure.serving(*measure.SHAPES[shapes[0]], hidden, serving_calls)
        group = f"{shapes[0]} {size}, exported policy"
        add(group, "SavedModel serving_default, batch 1, median", result["saved_model_median_ms"], "ms")
        add(group, "SavedModel serving_default, batch 1, p99", result["saved_model_p99_ms"], "ms")
        add(group, "TFLite, batch 1, median", result["tflite_median_ms"], "ms")
        add(group, "TFLite, batch 1, p99", result["tflite_p99_ms"], "ms")
        add(group, "ONNX model in onnxruntime, batch 1, median", result["onnx_median_ms"], "ms")
        add(group, "ONNX model in onnxruntime, batch 1, p99", result["onnx_p99_ms"], "ms")
        add(group, "SavedModel serving_default, batch 256", result["actions_per_second_batch_256"], "actions/s")
        add(group, "TFLite model size", result["tflite_bytes"] / 1024, "KiB")
        add(group, "ONNX model size", result["onnx_bytes"] / 1024, "KiB")
    for row in rows:
        base = next((r for r in rows if r.group == row.group and r.baseline), None)
        if base is not None and row.unit == base.unit:
            row.ratio = row.value / base.value
    return rows


def _ensemble(pair: str):
    try:
        dims, seeds = pair.split(":")
        return tuple(int(d) for d in dims.split("x")), int(seeds)
    except ValueError as error:
        raise UserError(f"--ensembles entry {pair!r}: expected SIZExSIZE:SEEDS, e.g. 64x64:8") from error


def markdown(rows: List["object"], header: str) -> str:
    lines = [header, ""]
    group = None
    for row in rows:
        if row.group != group:
            group = row.group
            lines += ["", f"**{group}**", "", "| row | value | ratio |", "| --- | --- | --- |"]
        ratio = "" if math.isnan(row.ratio) else f"{row.ratio:.2f}x"
        value = f"{row.value:,.3f}" if row.unit == "ms" else f"{row.value:,.1f}"
        lines.append(f"| {row.name} | {value} {row.unit} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}")
    try:
        hidden = [int(units) for units in FLAGS.hidden_dims]
    except ValueError as error:
        raise UserError(f"--hidden_dims={','.join(FLAGS.hidden_dims)}: {error}; e.g. --hidden_dims=256,256") from error
    if min(FLAGS.batch_size, FLAGS.fused_updates, FLAGS.rounds) <= 0 or FLAGS.seconds <= 0:
        raise UserError("--batch_size, --fused_updates, --rounds and --seconds must be positive")
    output = pathlib.Path(FLAGS.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    from iql_tf import fastest_path, quiet

    quiet.quiet_tensorflow()
    start = time.perf_counter()
    rows = run_benchmark(FLAGS.shapes, hidden, FLAGS.batch_size, FLAGS.fused_updates, FLAGS.rounds, FLAGS.seconds,
                         FLAGS.frameworks, FLAGS.loop_updates, FLAGS.loop_transitions, FLAGS.ensembles, FLAGS.online,
                         FLAGS.serving_calls, FLAGS.fqe)
    machine = fastest_path.machine()
    header = (f"Benchmark of {time.strftime('%Y-%m-%d %H:%M')}: {machine['processor']}, {machine['cores']} cores, "
              f"TensorFlow {machine['tensorflow']}, Python {platform.python_version()}; batch {FLAGS.batch_size}; "
              f"took {time.perf_counter() - start:.0f} s. Ratios are to the first row of each group.")
    text = markdown(rows, header)
    files.write_text(output / "benchmark.md", text)
    files.write_json(output / "benchmark.json", {"machine": machine, "rows": [row.__dict__ for row in rows]})
    print(text)


def run() -> None:
    """The `iql-benchmark` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
