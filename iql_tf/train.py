"""Offline IQL training: `python -m iql_tf.train --gin_file=gin/locomotion.gin --workdir=DIR`.

The loop runs the compiled train step K updates at a time, logs to TensorBoard, evaluates in the
dataset's environment, checkpoints (re-running the same command resumes exactly), and exports the
policy as a SavedModel. Everything else is configured with gin (see gin/base.gin).
"""

import json
import os
import signal
import sys
import time
from typing import Callable, Dict, Optional, Sequence

import gin
import numpy as np
import tensorflow as tf
import tqdm
from absl import app, flags, logging

from iql_tf import config
from iql_tf.agent import LOSS_NAMES, IQLAgent
from iql_tf.data.pipeline import make_dataset
from iql_tf.envs import check_env_fits, make_env
from iql_tf.errors import UserError, is_integer, run_main
from iql_tf.evaluation import evaluate, make_envs
from iql_tf.export import export_policy
from iql_tf.files import atomic_path
from iql_tf.replay_buffer import ReplayBuffer

FLAGS = flags.FLAGS
RESULTS_FILE = "eval_results.json"


class NonFiniteLossError(UserError):
    """A loss became NaN or infinite; training stops without saving over the last good checkpoint."""


class _StopRequest:
    """Turns SIGTERM / Ctrl-C into a flag that the loop polls, so it can save before exiting."""

    def __init__(self):
        self.signal_number: Optional[int] = None
        self._previous = {}

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame):
        self.signal_number = number

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def _next_multiple(step: int, interval: int) -> int:
    return (step // interval + 1) * interval


def _write_scalars(writer: tf.summary.SummaryWriter, prefix: str, values: Dict[str, float], step: int) -> None:
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(f"{prefix}/{name}", value)


@gin.configurable(denylist=["workdir", "dataset_fn", "env_fn"])
def train(
    workdir: str,
    max_steps: int = 1_000_000,
    seed: int = 0,
    steps_per_call: int = 1000,
    log_interval: int = 1000,
    eval_interval: int = 5000,
    eval_episodes: int = 10,
    checkpoint_interval: int = 10_000,
    checkpoints_to_keep: int = 2,
    export_on_eval: bool = False,
    progress_bar: bool = True,
    dataset_fn: Callable = make_dataset,
    env_fn: Optional[Callable] = None,
) -> Dict[str, float]:
    """Trains IQL offline in `workdir` and returns the final evaluation.

    Args:
      max_steps: gradient updates in total (also the length of the actor's cosine decay).
      seed: seeds the networks, the batch sampling and the evaluation episodes.
      steps_per_call: updates fused in one compiled call (K); logging/eval/checkpoint steps are
        always reached exactly.
      eval_episodes: episodes per evaluation (0 trains without an environment).
      export_on_eval: also export the policy at every evaluation, not only at the end.
      dataset_fn: returns the offline dataset (tensors + metadata); injected by tests.
      env_fn: builds one evaluation environment; defaults to the one in the dataset metadata.
    """
    for name, value, minimum in [("max_steps", max_steps, 1), ("steps_per_call", steps_per_call, 1),
                                 ("log_interval", log_interval, 1), ("eval_interval", eval_interval, 1),
                                 ("eval_episodes", eval_episodes, 0), ("checkpoint_interval", checkpoint_interval, 1),
                                 ("checkpoints_to_keep", checkpoints_to_keep, 1), ("seed", seed, 0)]:
        if not is_integer(value) or value < minimum:
            kind = "positive" if minimum else "non-negative"
            raise UserError(f"train.{name} = {value!r} must be a {kind} integer (write 1000000, not 1e6); "
                            "fix it in the gin file or --gin_bindings")

    dataset = dataset_fn()
    metadata = dataset.metadata
    observation_dim = int(np.prod(metadata.observation_shape))
    action_dim = int(np.prod(metadata.action_shape))
    if env_fn is None and eval_episodes > 0:
        if not metadata.env_id:
            raise UserError(
                f"dataset {metadata.source} names no environment, so it cannot be evaluated: bind "
                "make_dataset.env_id (e.g. 'Hopper-v5') to the env it was collected in, or train.eval_episodes = 0 "
                "to train without evaluation"
            )
        env_fn = lambda: make_env(metadata.env_id, metadata.env_kwargs, metadata.max_episode_steps)  # noqa: E731
    eval_envs = make_envs(env_fn, eval_episodes) if eval_episodes > 0 else []
    if eval_envs:
        check_env_fits(eval_envs[0], metadata.observation_keys, observation_dim, action_dim, metadata.source)

    buffer = ReplayBuffer(dataset.tensors)
    agent = IQLAgent(observation_dim, action_dim, actor_decay_steps=max_steps, seed=seed)
    checkpoint = tf.train.Checkpoint(agent=agent)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(workdir, "checkpoints"), checkpoints_to_keep)
    if manager.latest_checkpoint:
        try:
            # save_counter is only created at the next save: the one value allowed to stay unmatched.
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched().expect_partial()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise UserError(
                f"{manager.latest_checkpoint} does not match this configuration ({str(error).splitlines()[0]}): "
                "resume with the same gin files and bindings, or use a new --workdir"
            ) from error
        logging.info("Resumed from %s at step %d.", manager.latest_checkpoint, int(agent.step))

    writer = tf.summary.create_file_writer(os.path.join(workdir, "tb"))
    config.save_operative_config(workdir, writer, extra={"dataset": metadata.source,
                                                        "reward_preprocessing": dataset.reward_transform})

    def run_evaluation(step: int) -> Dict[str, float]:
        results = evaluate(
            lambda observations: agent.act(observations).numpy(), eval_envs, metadata.observation_keys,
            eval_episodes, seed, metadata.ref_min_score, metadata.ref_max_score,
        )
        _write_scalars(writer, "eval", results, step)
        _append_result(workdir, step, results)
        logging.info("step %d: %s", step, ", ".join(f"{k} {v:.3f}" for k, v in results.items()))
        return results

    def export(step: int, results: Dict[str, float]) -> None:
        export_policy(agent.actor, observation_dim, os.path.join(workdir, "export", "policy"), {
            "env_id": metadata.env_id, "env_kwargs": metadata.env_kwargs,
            "max_episode_steps": metadata.max_episode_steps, "observation_keys": metadata.observation_keys,
            "observation_dim": observation_dim, "action_dim": action_dim, "dataset": metadata.source,
            "step": step, "evaluation": results, "gin_config": gin.operative_config_str(),
        })

    step = int(agent.step)
    results: Dict[str, float] = {}
    last_saved = step if manager.latest_checkpoint else None
    bar = tqdm.tqdm(total=max_steps, initial=step, unit="step", disable=not progress_bar,
                    dynamic_ncols=True, file=sys.stderr)
    with _StopRequest() as stop:
        while step < max_steps and stop.signal_number is None:
            boundary = min(_next_multiple(step, interval) for interval in
                           (log_interval, eval_interval, checkpoint_interval, steps_per_call))
            num_steps = min(boundary, max_steps) - step
            start = time.perf_counter()
            metrics = agent.train(buffer, num_steps)
            elapsed = time.perf_counter() - start
            step = int(agent.step)
            bar.update(num_steps)
            for name in LOSS_NAMES:
                if not np.isfinite(metrics[name]):
                    bar.close()
                    where = f"the last good checkpoint (step {last_saved})" if last_saved is not None else "no checkpoint"
                    raise NonFiniteLossError(
                        f"non-finite {name} ({metrics[name]}) at step {step}: training stopped and {where} in "
                        f"{manager.directory} is left intact; lower the learning rates or check the dataset's rewards"
                    )
            metrics["steps_per_second"] = num_steps / elapsed
            if step % log_interval == 0 or step == max_steps:
                _write_scalars(writer, "train", metrics, step)
            if eval_episodes > 0 and step % eval_interval == 0 and step < max_steps:
                results = run_evaluation(step)
                bar.set_postfix(score=_headline(results))
                if export_on_eval:
                    export(step, results)
            if step % checkpoint_interval == 0:
                manager.save(checkpoint_number=step)
                last_saved = step
        bar.close()
        if stop.signal_number is not None:
            if last_saved != step:
                manager.save(checkpoint_number=step)
            writer.flush()
            logging.info("Stopped by signal %d at step %d; checkpoint saved in %s. Re-run the same command to resume.",
                         stop.signal_number, step, manager.directory)
            sys.exit(128 + stop.signal_number)

    if last_saved != step:
        manager.save(checkpoint_number=step)
    if eval_episodes > 0:
        # A finished run that is re-run (a sweep resuming, say) keeps its recorded final evaluation.
        results = _recorded_results(workdir).get(step) or run_evaluation(step)
    export(step, results)
    writer.flush()
    for env in eval_envs:
        env.close()
    logging.info("Done: %d steps; policy exported to %s.", step, os.path.join(workdir, "export", "policy"))
    return results


def _headline(results: Dict[str, float]) -> str:
    for name in ("success_rate", "normalized_score", "return_mean"):
        if name in results:
            return f"{name} {results[name]:.3g}"
    return ""


def _recorded_results(workdir: str) -> Dict[int, Dict[str, float]]:
    """The evaluations in DIR/eval_results.json, by step."""
    path = os.path.join(workdir, RESULTS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {entry.pop("step"): entry for entry in json.load(f)}


def _append_result(workdir: str, step: int, results: Dict[str, float]) -> None:
    """Adds an evaluation to DIR/eval_results.json (atomically), dropping any of a later step that a
    resumed run is about to redo."""
    history = [{"step": s, **r} for s, r in _recorded_results(workdir).items() if s < step]
    history.append({"step": step, **results})
    with atomic_path(os.path.join(workdir, RESULTS_FILE)) as path, open(path, "w") as f:
        json.dump(history, f, indent=2)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}: settings go in --gin_file or --gin_bindings")
    if not FLAGS.workdir:
        raise UserError("--workdir is required: the run directory for checkpoints, TensorBoard and the export")
    config.quiet_tensorflow_info()
    config.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
    try:
        os.makedirs(FLAGS.workdir, exist_ok=True)
    except OSError as error:
        raise UserError(f"--workdir {FLAGS.workdir}: cannot create it ({error.strerror}); choose a writable folder") from error
    train(FLAGS.workdir)


if __name__ == "__main__":
    config.define_gin_flags()
    flags.DEFINE_string("workdir", None, "Run directory: checkpoints, TensorBoard events, export. Re-use it to resume.")
    app.run(run_main(main))
