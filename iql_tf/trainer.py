"""One training run: the offline phase of IQL updates, then, when asked, online fine-tuning, with
evaluation, TensorBoard, checkpoints and the exported policy.

`run_training(workdir, data, agent, settings)` builds a `TrainingRun` and takes it through its parts: `build`
(data, environments, replay buffer, agent), `restore` (the newest intact checkpoint of an earlier run in the
same directory, whose training settings must match), `loop` (updates in compiled calls of K, or one
environment step and one update at a time online, stopping at log / evaluation / checkpoint boundaries),
`evaluate`, `export` and `finish`. It is configured by the three settings objects of `settings.py` (from gin
when not given). The run directory's files belong to `run_files.py`; what its checkpoints hold and how they
are restored, to `run_state.py`; how it is asked to stop, to `stopping.py`.
"""

import dataclasses
import pathlib
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import gin
import gymnasium as gym
import numpy as np
from absl import logging

from iql_tf import evaluation, fastest_path, generation, logs, run_files
from iql_tf.agent import LOSS_NAMES, IQLAgent
from iql_tf.checkpoints import Checkpoints
from iql_tf.data.pipeline import OfflineDataset, make_dataset
from iql_tf.data.streaming import StreamedBatches, default_shuffle_buffer
from iql_tf.envs import check_env_fits, make_env, stack_frames
from iql_tf.errors import UserError
from iql_tf.online import OnlinePhase
from iql_tf.policy import Policy, exported, member_policy
from iql_tf.policy.metadata import agent_inputs, data_record
from iql_tf.replay_buffer import ReplayBuffer
from iql_tf.run_state import RunState, TrainedRun, training_record
from iql_tf.settings import AgentSettings, DataSettings, RunSettings
from iql_tf.stopping import RunStopped, StopRequest
from iql_tf.summaries import Summaries


class NonFiniteError(UserError):
    """A loss or weight became NaN or infinite; training stops without saving it."""


class TrainingRun:
    """The state and parts of one training run (see the module docstring)."""

    def __init__(self, workdir: "str | pathlib.Path", data: DataSettings, agent: AgentSettings, settings: RunSettings,
                 dataset_fn: Callable[[DataSettings], OfflineDataset] = make_dataset,
                 env_fn: Optional[Callable[[], gym.Env]] = None, hparams: Optional[Dict[str, Any]] = None,
                 stop_files: Sequence[str] = ()):
        self.files = run_files.RunFiles(workdir)
        self.checkpoints = Checkpoints(self.files.checkpoints)
        self.stop_files = [pathlib.Path(path) for path in stop_files]
        self.data_settings, self.agent_settings, self.settings = data, agent, settings
        self.dataset_fn, self.env_fn = dataset_fn, env_fn
        self.hparams = dict(hparams or {})
        self.seeds = list(settings.seeds)

    # --- build -------------------------------------------------------------------------------------------

    def build(self) -> None:
        """Dataset, environments, replay buffer, agent and the objects a checkpoint holds."""
        settings = self.settings
        dataset = self.dataset_fn(self.data_settings)
        # The tensors go into the replay buffer below and are not kept: the data is held once, in its variables.
        self.metadata, self.preprocessing = dataset.metadata, dataset.preprocessing
        self.validation = dataset.validation
        metadata = self.metadata
        self.observation_dim = 0 if metadata.parts else int(np.prod(metadata.observation_shape))
        self.action_dim = int(np.prod(metadata.action_shape))
        if self.env_fn is None and metadata.env_id:
            self.env_fn = lambda: make_env(metadata.env_id, metadata.env_kwargs, metadata.max_episode_steps)
        if self.env_fn is None:
            if settings.num_online_steps:
                raise UserError(f"dataset {metadata.source} names no environment, so it cannot be fine-tuned online: "
                                "bind make_dataset.env_id to the environment it was collected in")
            if settings.eval_episodes:
                logging.info("dataset %s names no environment: training without evaluation (evaluate the export "
                             "later with `iql-evaluate RUN_DIR/export/policy --env_id=...`)", metadata.source)
        self.eval_envs = []
        frame_stack = self.data_settings.frame_stack
        if self.env_fn is not None and settings.eval_episodes:
            self.eval_envs = evaluation.make_envs(self.env_fn, settings.eval_episodes)
            try:
                check_env_fits(self.eval_envs[0], metadata.observation_keys, self.observation_dim, self.action_dim,
                               metadata.source, metadata.image_shape, metadata.parts)
            except UserError:
                for env in self.eval_envs:  # (environments in processes of their own included)
                    env.close()
                raise
            self.eval_envs = [stack_frames(env, frame_stack) for env in self.eval_envs]
        if settings.num_online_steps and metadata.images:  # (before a buffer for the online steps is made)
            what = "observations of parts (with images)" if metadata.parts else "image observations"
            raise UserError(f"dataset {metadata.source} has {what}, which online fine-tuning does not "
                            "take yet (nor does the FQL repository's); train offline: bind train.num_online_steps = 0")
        self.streaming = dataset.tensors is None
        if self.streaming:
            if settings.num_online_steps:
                raise UserError("make_dataset.streaming with train.num_online_steps: fine-tuning keeps the offline data "
                                "in its replay buffer, so it needs the dataset in memory; bind "
                                "make_dataset.streaming = False (or fine-tune from a dataset that fits)")
            self.batches = StreamedBatches(dataset.directory, metadata, self.preprocessing, len(self.seeds),
                                           self.agent_settings.batch_size, self.shuffle_buffer, settings.seed,
                                           frame_stack=frame_stack)
        else:
            self.batches = ReplayBuffer(dataset.tensors, self.agent_settings.batch_size,
                                        capacity=metadata.num_transitions + settings.num_online_steps,
                                        frame_stack=frame_stack)
        del dataset
        self.agent = self._new_agent(self.agent_settings)
        self.online = None
        if settings.num_online_steps and self.agent_settings.actor_cosine_decay:
            raise UserError("IQLAgent.actor_cosine_decay = True with train.num_online_steps: the actor's learning rate "
                            "would reach 0 at the end of the offline phase and stay there online; bind "
                            "IQLAgent.actor_cosine_decay = False (the *_finetune configs do, as the reference's)")
        if settings.num_online_steps:
            exploration_env = self.env_fn()  # its own instance: evaluation never steps it
            check_env_fits(exploration_env, metadata.observation_keys, self.observation_dim, self.action_dim,
                           metadata.source)
            self.online = OnlinePhase(exploration_env, metadata.observation_keys, self.preprocessing, self.agent,
                                      self.batches, settings.seed, settings.exploration_noise, self.checkpoints)
            self.online.on_episode = lambda step, episode: self.summaries.scalars(
                "online", {f"episode_{name}": value for name, value in episode.items()}, step)
        trackables = dict(agent=self.agent)
        if self.streaming:
            # The stream's iterator (its position and buffers) and current group: a resume reads on alike.
            trackables["stream"] = self.batches
        if self.online is not None:
            trackables.update(self.online.trackables())
        self.state = RunState(self.files, self.checkpoints, trackables)
        self.summaries = Summaries(self.files, self.seeds)

    @property
    def shuffle_buffer(self) -> int:
        """The stream's shuffle buffer in rows: as bound, or its default for this data."""
        frame_stack = self.data_settings.frame_stack
        return self.data_settings.shuffle_buffer or default_shuffle_buffer(self.metadata, frame_stack)

    def _new_agent(self, settings: AgentSettings) -> IQLAgent:
        return IQLAgent(self.observation_dim, self.action_dim, settings,
                        actor_decay_steps=max(self.settings.num_offline_steps, 1), seeds=self.seeds,
                        **agent_inputs(self.data_record))

    def hparams_of(self, member: int) -> Dict[str, Any]:
        """What TensorBoard's HParams tab shows for one seed: the dataset, tau, beta and the seed, and what a sweep
        varies; a fine-tuning run's online steps too (so a report never pools it with offline-only runs)."""
        agent = self.agent.hyperparameters
        online = {"train.num_online_steps": self.settings.num_online_steps} if self.settings.num_online_steps else {}
        return {"make_dataset.source": self.metadata.source, "IQLAgent.expectile": agent["expectile"],
                "IQLAgent.beta": agent["beta"], **online, **self.hparams, "train.seed": self.seeds[member]}

    def _record(self) -> Dict[str, Any]:
        """The record its checkpoints keep (`run_state.training_record`)."""
        metadata = self.metadata
        # How batches are drawn: uniformly with replacement from memory, or from a shuffled stream.
        sampling = {"stream": self.shuffle_buffer} if self.streaming else "replay buffer"
        environment = ({"env_id": metadata.env_id, "env_kwargs": metadata.env_kwargs} if self.online is not None
                       else None)
        return training_record(self.agent, self.settings, metadata.source, metadata.content_checksum,
                               self.preprocessing, sampling, environment, self.data_record)

    # --- restore -----------------------------------------------------------------------------------------

    def restore(self) -> None:
        """Resumes from the newest intact checkpoint, or starts at step 0 where there is none."""
        found = self.state.find(self.settings.start_over)
        if found is not None and self.agent.jit_compile is None:
            self.agent.compile(found[1]["training"]["xla"])  # the path it was trained with: same numerics
        if self.agent.jit_compile is None:
            # A stream is not timed on: timing must not advance it.
            timed_on = None if self.streaming else self.batches
            self.agent.compile(fastest_path.choose(self.agent, self._fresh_agent, timed_on, self.settings))
        self.state.resume(found, self._record())
        if found is not None and self.online is not None:
            self.online.restore()

    def _fresh_agent(self, jit_compile: bool) -> IQLAgent:
        """Another agent like this run's (for timing the compiled paths without touching this one)."""
        return self._new_agent(dataclasses.replace(self.agent_settings, jit_compile=jit_compile))

    # --- loop --------------------------------------------------------------------------------------------

    def loop(self) -> None:
        """Updates until the last step, stopping at each log / evaluation / checkpoint boundary."""
        settings = self.settings
        step = int(self.agent.step)
        self.results: List[Dict[str, float]] = [{} for _ in self.seeds]
        self.bar = logs.progress_bar(settings.total_steps, step, settings.progress_bar)
        self._window = (time.perf_counter(), step)  # since the last log line: updates per second
        with StopRequest(self.files.stop_file, self.stop_files) as stop:
            while step < settings.total_steps and not stop.requested:
                if step < settings.num_offline_steps:
                    boundary = min(_next_multiple(step, interval) for interval in (
                        settings.log_interval, settings.eval_interval, settings.checkpoint_interval,
                        settings.steps_per_call))
                    metrics = self.agent.run_updates(self.batches, min(boundary, settings.num_offline_steps) - step)
                else:
                    metrics = self.online.env_step()
                done, step = step, int(self.agent.step)
                self.bar.update(step - done)
                self._check_finite_losses(metrics, step)
                self._after_updates(step, metrics)
            self.bar.close()
            if stop.requested:
                if self.state.last_saved != step:
                    self.save(step)
                self.summaries.flush()
                logging.info("Stopped by %s at step %d; checkpoint saved in %s. Re-run the same command to resume.",
                             stop.reason, step, self.checkpoints.folder)
                raise RunStopped(stop.reason, stop.signal_number, step)

    def _after_updates(self, step: int, metrics: Dict[str, np.ndarray]) -> None:
        settings = self.settings
        online = self.online is not None and step > settings.num_offline_steps
        if step % settings.log_interval == 0 or step == settings.total_steps:
            now = time.perf_counter()
            metrics["steps_per_second"] = (step - self._window[1]) / (now - self._window[0])
            self._window = (now, step)
            self.summaries.scalars("train", metrics, step)
            if online:
                self.summaries.scalars("online", self.online.summary(), step)
        if step % settings.eval_interval == 0 or step == settings.total_steps:
            self._validate(step)
        if self.eval_envs and step % settings.eval_interval == 0 and step < settings.total_steps:
            self.evaluate(step)
            if settings.export_on_eval:
                self.export(step)
        if step % settings.checkpoint_interval == 0:
            self.save(step)

    def _validate(self, step: int) -> None:
        """The held-out split's TD errors and value statistics, per seed, to TensorBoard (`validation/*`)."""
        if self.validation is None:
            return
        metrics = self.agent.held_out_metrics(self.validation)
        self.summaries.scalars("validation", metrics, step)
        logging.info("step %d, held-out data: critic_loss %s, value_loss %s", step,
                     " ".join(f"{value:.4g}" for value in metrics["critic_loss"]),
                     " ".join(f"{value:.4g}" for value in metrics["value_loss"]))

    def _check_finite_losses(self, metrics: Dict[str, np.ndarray], step: int) -> None:
        for name in LOSS_NAMES:
            bad = np.flatnonzero(~np.isfinite(metrics[name]))
            if bad.size:
                self.bar.close()
                where = (f"the last good checkpoint (step {self.state.last_saved})" if self.state.last_saved is not None
                         else "no checkpoint")
                raise NonFiniteError(
                    f"non-finite {name} ({metrics[name][bad[0]]}) at step {step} (seed {self.seeds[bad[0]]}): training "
                    f"stopped and {where} in {self.checkpoints.folder} is left intact; lower the learning rates "
                    "or check the dataset's rewards"
                )

    def _check_finite_weights(self, step: int) -> None:
        """No non-finite weight is ever saved, evaluated or exported (the losses are checked before an update,
        so the last update of a call could still have broken the weights)."""
        broken = [name for name, finite in self.agent.weights_finite().items() if not finite]
        if broken:
            raise NonFiniteError(
                f"non-finite weights in the {', '.join(broken)} network(s) at step {step}: training stopped without "
                f"saving them; the last good checkpoint (step {self.state.last_saved}) in {self.checkpoints.folder} is "
                "left intact; lower the learning rates or check the dataset's rewards"
            )

    def save(self, step: int) -> None:
        self._check_finite_weights(step)
        if self.online is not None:
            self.online.save_transitions()
        self.state.save(step, self.settings.checkpoints_to_keep)

    # --- evaluate / export / finish ----------------------------------------------------------------------

    def policy(self, member: int) -> Policy:
        """Member `member`'s deterministic policy on raw flattened observations, in the env's units."""
        return member_policy(self.agent, self.preprocessing, member)

    def evaluate(self, step: int) -> None:
        self._check_finite_weights(step)
        metadata = self.metadata
        self.bar.set_postfix_str("evaluating...", refresh=True)
        for member, seed in enumerate(self.seeds):
            results = evaluation.evaluate(self.policy(member), self.eval_envs, metadata.observation_keys,
                                          self.settings.eval_episodes, seed, metadata.ref_min_score,
                                          metadata.ref_max_score)
            self.results[member] = results
            self.summaries.evaluation(member, results, step)
            self.files.append_result(step, seed, results)
            logging.info("step %d, seed %d: %s", step, seed,
                      ", ".join(f"{name} {value:.3f}" for name, value in results.items()))
        self.bar.set_postfix_str(_headline(self.results), refresh=True)

    def export(self, step: int) -> None:
        self._check_finite_weights(step)
        for member, seed in enumerate(self.seeds):
            exported.export_member(self.agent, member, self.preprocessing, self.export_dir(member), self.data_record,
                                   seed, self.results[member], gin.operative_config_str())

    @property
    def data_record(self) -> Dict[str, Any]:
        """What an exported policy's metadata says of the data (`policy.metadata.data_record`)."""
        return data_record(self.metadata, self.preprocessing, self.data_settings.frame_stack)

    def trained(self) -> TrainedRun:
        """The agent with what serving and exporting it need (what `iql_tf.IQL` holds after `fit`)."""
        return TrainedRun(self.agent, self.preprocessing, self.data_record, self.seeds, self.results, self.files)

    def export_dir(self, member: int) -> str:
        return str(self.files.export_dir(self.seeds, member))

    def finish(self) -> List[Dict[str, float]]:
        """Saves, evaluates (a finished run that is re-run keeps its recorded final evaluation) and exports."""
        step = int(self.agent.step)
        if self.state.last_saved != step:
            self.save(step)
        if self.eval_envs:
            recorded = self.files.results()
            if all((step, seed) in recorded for seed in self.seeds):
                self.results = [recorded[(step, seed)] for seed in self.seeds]
            else:
                self.evaluate(step)
        self.export(step)
        self.close()
        self.files.write_finished({
            "step": step, "num_offline_steps": self.settings.num_offline_steps,
            "dataset": self.metadata.source, "seeds": self.seeds, "results": self.results,
            "swept": {name: value for name, value in self.hparams.items() if name != "train.seed"},
            "hparams": [self.hparams_of(member) for member in range(len(self.seeds))],
            # How it was trained, but for the seeds: the report never pools runs that differ in it.
            "training": {name: value for name, value in self._record()["training"].items()
                         if name not in ("seed", "num_seeds")}})
        logging.info("Done: %d steps; policy exported to %s.", step, self.export_dir(0))
        return self.results

    def close(self) -> None:
        """Closes the progress bar, flushes TensorBoard and closes the environments (after `finish`, or when a
        run stops early or fails, even half built)."""
        if getattr(self, "bar", None) is not None:
            self.bar.close()
        if getattr(self, "summaries", None) is not None:
            self.summaries.flush()
        for env in getattr(self, "eval_envs", []):
            env.close()
        if getattr(self, "online", None) is not None:
            self.online.close()


def train(workdir: "str | pathlib.Path", data: Optional[DataSettings] = None, agent: Optional[AgentSettings] = None,
          settings: Optional[RunSettings] = None, *, dataset_fn: Callable[[DataSettings], OfflineDataset] = make_dataset,
          env_fn: Optional[Callable[[], gym.Env]] = None, hparams: Optional[Dict[str, Any]] = None,
          stop_files: Sequence[str] = ()) -> TrainingRun:
    """Trains in `workdir` (resuming what is there); settings not given come from the gin bindings. Returns the
    finished run (its agent, preprocessing and final evaluation in `results`). Raises RunStopped after
    SIGTERM / Ctrl-C, a file DIR/STOP or one of `stop_files` (a checkpoint is saved first)."""
    run = TrainingRun(workdir, data or DataSettings(), agent or AgentSettings(), settings or RunSettings(),
                      dataset_fn, env_fn, hparams, stop_files)
    run.data_settings.require_source()  # before the run directory is made
    generation.register_generated_datasets()  # the project's own ids are generated when missing
    with run.files.lock():
        try:
            run.build()
            run.restore()
            _write_operative_config(run)
            run.loop()
            run.finish()
        except BaseException:
            run.close()
            raise
    return run


def run_training(*args: Any, **kwargs: Any) -> List[Dict[str, float]]:
    """`train(...)`, returning the final evaluation of each seed ({} without evaluation)."""
    return train(*args, **kwargs).results


def _write_operative_config(run: TrainingRun) -> None:
    """The gin config in use, to DIR/operative_config.gin and TensorBoard (with the data preprocessing)."""
    operative = gin.operative_config_str()
    run.files.write_operative_config(operative)
    details = "\n".join(f"- {key}: `{value}`" for key, value in {
        "dataset": run.metadata.source, "preprocessing": run.preprocessing.describe()["reward"],
        "observation normalisation": run.preprocessing.normalize_observations,
        "compiled with XLA": run.agent.jit_compile,
    }.items())
    run.summaries.configuration(operative, details, [run.hparams_of(member) for member in range(len(run.seeds))],
                                int(run.agent.step))


def _next_multiple(step: int, interval: int) -> int:
    return (step // interval + 1) * interval


def _headline(results: List[Dict[str, float]]) -> str:
    for name in ("success_rate", "normalized_score", "return_mean"):
        values = [r[name] for r in results if name in r]
        if values:
            return f"{name} {np.mean(values):.3g}"
    return ""
