"""One training run: the offline phase of IQL updates, then, when asked, online fine-tuning, with
evaluation, TensorBoard, checkpoints and the exported policy.

`run_training(workdir, data, agent, settings)` builds a `TrainingRun` and takes it through its parts: `build`
(data, environments, replay buffer, agent), `restore` (the newest intact checkpoint of an earlier run in the
same directory, whose training settings must match), `loop` (updates in compiled calls of K, or one
environment step and one update at a time online, stopping at log / evaluation / checkpoint boundaries),
`evaluate`, `export` and `finish`. It is configured by the three settings objects of `settings.py` (from gin
when not given). The run directory's files belong to `run_files.py`, its checkpoints to `checkpoints.py`.
"""

import dataclasses
import json
import pathlib
import signal
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import gin
import gymnasium as gym
import numpy as np
import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hp

from iql_tf import evaluation, fastest_path, generation, logs, run_files
from iql_tf.agent import LOSS_NAMES, IQLAgent
from iql_tf.checkpoints import Checkpoints
from iql_tf.data.pipeline import OfflineDataset, make_dataset
from iql_tf.data.preprocessing import Preprocessing
from iql_tf.data.streaming import StreamedBatches
from iql_tf.envs import check_env_fits, make_env
from iql_tf.errors import UserError
from iql_tf.export import export_policy
from iql_tf.online import OnlinePhase
from iql_tf.policy_metadata import PolicyMetadata
from iql_tf.replay_buffer import ReplayBuffer
from iql_tf.settings import AgentSettings, DataSettings, RunSettings


class NonFiniteError(UserError):
    """A loss or weight became NaN or infinite; training stops without saving it."""


class _StopRequest:
    """SIGTERM, Ctrl-C or a file DIR/STOP ask the loop to save and exit; the loop polls `requested`.

    Signals become a flag (where this is the main thread: a Ray worker may run the loop in another), and the
    file lets a sweep driver, or a person, stop a run on any machine that shares the directory.
    """

    def __init__(self, stop_file: pathlib.Path, extra_stop_files: Sequence[pathlib.Path] = ()):
        self.stop_file = stop_file
        self.extra_stop_files = list(extra_stop_files)  # a sweep's: watched, never deleted here
        self.reason: Optional[str] = None
        self.signal_number: Optional[int] = None
        self._previous = {}

    def __enter__(self):
        self.stop_file.unlink(missing_ok=True)  # an old request must not stop this run at once
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread: only the file can ask
                break
        return self

    def _handle(self, number, frame):
        self.signal_number, self.reason = number, f"signal {number}"

    @property
    def requested(self) -> bool:
        if self.reason is None:
            self.reason = next((str(path) for path in [self.stop_file, *self.extra_stop_files] if path.exists()), None)
        return self.reason is not None

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self.stop_file.unlink(missing_ok=True)


class RunStopped(Exception):
    """Raised by `run_training` after a stop request: the run saved a checkpoint and can be resumed."""

    def __init__(self, reason: str, signal_number: Optional[int], step: int):
        super().__init__(f"stopped by {reason} at step {step}")
        self.reason, self.signal_number, self.step = reason, signal_number, step


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
        # The arrays go into the replay buffer below and are not kept: the data is held once, in its variables.
        self.metadata, self.preprocessing = dataset.metadata, dataset.preprocessing
        metadata = self.metadata
        self.observation_dim = int(np.prod(metadata.observation_shape))
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
        if self.env_fn is not None and settings.eval_episodes:
            self.eval_envs = evaluation.make_envs(self.env_fn, settings.eval_episodes)
            check_env_fits(self.eval_envs[0], metadata.observation_keys, self.observation_dim, self.action_dim,
                           metadata.source)
        self.streaming = dataset.arrays is None
        if self.streaming:
            if settings.num_online_steps:
                raise UserError("make_dataset.streaming with train.num_online_steps: fine-tuning keeps the offline data "
                                "in its replay buffer, so it needs the dataset in memory; bind "
                                "make_dataset.streaming = False (or fine-tune from a dataset that fits)")
            self.batches = StreamedBatches(dataset.directory, metadata, self.preprocessing, len(self.seeds),
                                           self.agent_settings.batch_size, self.data_settings.shuffle_buffer,
                                           settings.seed)
        else:
            self.batches = ReplayBuffer(dataset.arrays, capacity=metadata.num_transitions + settings.num_online_steps)
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
            self.online.on_episode = lambda step, episode: self._write_scalars(
                "online", {f"episode_{name}": value for name, value in episode.items()}, step)
        self.record = tf.Variable("", name="record")  # the settings the checkpoint was trained with, as JSON
        trackables = dict(agent=self.agent, record=self.record)
        if self.streaming:
            # The stream's iterator (its position and buffers) and current group: a resume reads on alike.
            trackables["stream"] = self.batches
        if self.online is not None:
            trackables.update(self.online.trackables())
        self.checkpoint = tf.train.Checkpoint(**trackables)
        # Events in DIR (or DIR/seed_K): TensorBoard's run list then names the run by its directory.
        self.writers = [tf.summary.create_file_writer(str(self.files.tensorboard_dir(self._seed_dir(k))))
                        for k in range(len(self.seeds))]

    def _new_agent(self, settings: AgentSettings) -> IQLAgent:
        return IQLAgent(self.observation_dim, self.action_dim, settings,
                        actor_decay_steps=max(self.settings.num_offline_steps, 1), seeds=self.seeds)

    def hparams_of(self, member: int) -> Dict[str, Any]:
        """What TensorBoard's HParams tab shows for one seed: the dataset, tau, beta and the seed, and what a sweep
        varies; a fine-tuning run's online steps too (so a report never pools it with offline-only runs)."""
        agent = self.agent.hyperparameters
        online = {"train.num_online_steps": self.settings.num_online_steps} if self.settings.num_online_steps else {}
        return {"make_dataset.source": self.metadata.source, "IQLAgent.expectile": agent["expectile"],
                "IQLAgent.beta": agent["beta"], **online, **self.hparams, "train.seed": self.seeds[member]}

    def _seed_dir(self, member: int) -> List[str]:
        return [f"seed_{self.seeds[member]}"] if len(self.seeds) > 1 else []

    def _training_record(self) -> Dict[str, Any]:
        """What decides the weights this run ends with (compared on resume), and what does not."""
        metadata = self.metadata
        # The number of offline updates decides the weights through the actor's cosine schedule and where the
        # online phase starts; without either, a resumed run may train for longer or shorter.
        decisive = [name for name in RunSettings.TRAINING if name != "num_offline_steps"
                    or self.agent.hyperparameters["actor_cosine_decay"] or self.settings.num_online_steps]
        training = {
            "agent": self.agent.hyperparameters,
            "xla": self.agent.jit_compile,
            **{name: getattr(self.settings, name) for name in decisive},
            "dataset": metadata.source,
            "dataset_content": metadata.content_checksum,
            "preprocessing": _rounded(self.preprocessing.describe()),
            # How batches are drawn: uniformly with replacement from memory, or from a shuffled stream.
            "sampling": {"stream": self.data_settings.shuffle_buffer} if self.streaming else "replay buffer",
        }
        if self.online is not None:
            training["environment"] = {"env_id": metadata.env_id, "env_kwargs": metadata.env_kwargs}
        other = {field.name: getattr(self.settings, field.name) for field in dataclasses.fields(RunSettings)
                 if field.name not in decisive}
        return {"training": training, "other": other, "policy": self.policy_record}

    # --- restore -----------------------------------------------------------------------------------------

    def restore(self) -> None:
        """Resumes from the newest intact checkpoint, or starts at step 0 where there is none."""
        if self.settings.start_over:
            self.checkpoints.delete_all()
            self.files.remove_outputs()
        self.checkpoints.sweep_temporary()
        found = self.checkpoints.newest_intact()
        if found is None and self.files.has_outputs():
            raise UserError(f"{self.files.path} holds the outputs of an earlier run ({', '.join(self.files.has_outputs())}) "
                            "but no checkpoint to resume it from: training from step 0 would overwrite them; use a new "
                            "--workdir, or bind train.start_over = True to replace them")
        recorded = None
        if found is not None:
            step, reader = found
            recorded = json.loads(reader.get_tensor("record/.ATTRIBUTES/VARIABLE_VALUE").decode())
            if self.agent.jit_compile is None:
                self.agent.compile(recorded["training"]["xla"])  # the path it was trained with: same numerics
        if self.agent.jit_compile is None:
            self.agent.compile(fastest_path.choose(self.agent, self._fresh_agent, self._timing_buffer(), self.settings))
        current = self._training_record()
        if recorded is not None:
            self._check_same_training(recorded, current, step)  # compares "training" and "other" only
            self.checkpoint.read(self.checkpoints.prefix(step)).assert_existing_objects_matched()
            if self.online is not None:
                self.online.restore()
            logging.info("Resumed from %s at step %d.", self.checkpoints.prefix(step), int(self.agent.step))
        self.record.assign(json.dumps(current, sort_keys=True))
        self.last_saved = int(self.agent.step) if recorded is not None else None

    def _timing_buffer(self) -> ReplayBuffer:
        """What the compiled paths are timed on: the replay buffer, or for a stream (which timing must not
        advance) random transitions of the dataset's shapes (the speed depends on the shapes only)."""
        if not self.streaming:
            return self.batches
        rng = np.random.default_rng(0)
        rows = 4 * self.agent_settings.batch_size
        return ReplayBuffer({"observations": rng.standard_normal((rows, self.observation_dim)),
                             "actions": rng.uniform(-1, 1, (rows, self.action_dim)), "rewards": rng.standard_normal(rows),
                             "next_observations": rng.standard_normal((rows, self.observation_dim)),
                             "terminals": np.zeros(rows)})

    def _fresh_agent(self, jit_compile: bool) -> IQLAgent:
        """Another agent like this run's (for timing the compiled paths without touching this one)."""
        return self._new_agent(dataclasses.replace(self.agent_settings, jit_compile=jit_compile))

    def _check_same_training(self, recorded: Dict[str, Any], current: Dict[str, Any], step: int) -> None:
        """Refuses a resume whose training settings differ; records changes to the others."""
        changed = _differences(recorded["training"], current["training"])
        if changed:
            hint = ""
            if "num_online_steps" in {name.split(".")[0] for name, _, _ in changed}:
                hint = " (a run trained offline only cannot grow an online phase: fine-tune in a new --workdir)"
            listing = "; ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in changed)
            raise UserError(f"{self.files.path} was trained with other settings than these ({listing}){hint}: "
                            "resume with the same gin files and bindings, or use a new --workdir")
        other = _differences(recorded["other"], current["other"])
        if other:
            logging.info("resuming at step %d with changed settings: %s", step,
                         "; ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in other))
            self.files.record_resume(step, {name: [old, new] for name, old, new in other})

    # --- loop --------------------------------------------------------------------------------------------

    def loop(self) -> None:
        """Updates until the last step, stopping at each log / evaluation / checkpoint boundary."""
        settings = self.settings
        step = int(self.agent.step)
        self.results: List[Dict[str, float]] = [{} for _ in self.seeds]
        self.bar = logs.progress_bar(settings.total_steps, step, settings.progress_bar)
        self._window = (time.perf_counter(), step)  # since the last log line: updates per second
        with _StopRequest(self.files.stop_file, self.stop_files) as stop:
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
                if self.last_saved != step:
                    self.save(step)
                for writer in self.writers:
                    writer.flush()
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
            self._write_scalars("train", metrics, step)
            if online:
                self._write_scalars("online", self.online.summary(), step)
        if self.eval_envs and step % settings.eval_interval == 0 and step < settings.total_steps:
            self.evaluate(step)
            if settings.export_on_eval:
                self.export(step)
        if step % settings.checkpoint_interval == 0:
            self.save(step)

    def _check_finite_losses(self, metrics: Dict[str, np.ndarray], step: int) -> None:
        for name in LOSS_NAMES:
            bad = np.flatnonzero(~np.isfinite(metrics[name]))
            if bad.size:
                self.bar.close()
                where = (f"the last good checkpoint (step {self.last_saved})" if self.last_saved is not None
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
                f"saving them; the last good checkpoint (step {self.last_saved}) in {self.checkpoints.folder} is "
                "left intact; lower the learning rates or check the dataset's rewards"
            )

    def _write_scalars(self, prefix: str, values: Dict[str, Any], step: int) -> None:
        """Each value is one number for every seed or one per seed; each seed's go to its own writer."""
        members = len(self.seeds)
        for member, writer in enumerate(self.writers):
            with writer.as_default(step=step):
                for name, value in values.items():
                    per_member = np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (members,))
                    tf.summary.scalar(f"{prefix}/{name}", per_member[member])

    def save(self, step: int) -> None:
        self._check_finite_weights(step)
        if self.online is not None:
            self.online.save_transitions()
        self.checkpoints.save(self.checkpoint, step, self.settings.checkpoints_to_keep)
        self.last_saved = step

    # --- evaluate / export / finish ----------------------------------------------------------------------

    def policy(self, member: int) -> evaluation.Policy:
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
            with self.writers[member].as_default(step=step):
                for name, value in results.items():
                    tf.summary.scalar(f"eval/{name}", value)
            self.files.append_result(step, seed, results)
            logging.info("step %d, seed %d: %s", step, seed,
                      ", ".join(f"{name} {value:.3f}" for name, value in results.items()))
        self.bar.set_postfix_str(_headline(self.results), refresh=True)

    def export(self, step: int) -> None:
        self._check_finite_weights(step)
        for member, seed in enumerate(self.seeds):
            export_policy(self.agent.member_weights(member), self.agent.hyperparameters["activation"],
                          self.preprocessing, self.export_dir(member),
                          PolicyMetadata(**self.policy_record, seed=seed, step=step,
                                         evaluation=self.results[member], gin_config=gin.operative_config_str()),
                          tanh_mean=self.agent.settings.tanh_mean)

    @property
    def policy_record(self) -> Dict[str, Any]:
        """What an exported policy's metadata says of the data and the environment (also kept in each
        checkpoint's record, so that a policy can be exported from a checkpoint alone: `iql_tf.IQL.load`)."""
        metadata, preprocessing = self.metadata, self.preprocessing
        return dict(env_id=metadata.env_id, env_kwargs=metadata.env_kwargs, max_episode_steps=metadata.max_episode_steps,
                    observation_keys=metadata.observation_keys, observation_dim=self.observation_dim,
                    action_dim=self.action_dim, action_low=preprocessing.action_low.tolist(),
                    action_high=preprocessing.action_high.tolist(),
                    observation_normalization=preprocessing.describe()["observation_normalization"],
                    ref_min_score=metadata.ref_min_score, ref_max_score=metadata.ref_max_score,
                    dataset=metadata.source, dataset_checksum=metadata.content_checksum)

    def export_dir(self, member: int) -> str:
        return str(self.files.export_dir(self._seed_dir(member)))

    def finish(self) -> List[Dict[str, float]]:
        """Saves, evaluates (a finished run that is re-run keeps its recorded final evaluation) and exports."""
        step = int(self.agent.step)
        if self.last_saved != step:
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
            "training": {name: value for name, value in self._training_record()["training"].items()
                         if name not in ("seed", "num_seeds")}})
        logging.info("Done: %d steps; policy exported to %s.", step, self.export_dir(0))
        return self.results

    def close(self) -> None:
        """Closes the progress bar, flushes TensorBoard and closes the environments (after `finish`, or when a
        run stops early or fails, even half built)."""
        if getattr(self, "bar", None) is not None:
            self.bar.close()
        for writer in getattr(self, "writers", []):
            writer.flush()
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


def member_policy(agent: IQLAgent, preprocessing: Preprocessing, member: int) -> evaluation.Policy:
    """One member's deterministic policy on raw flattened observations, in the data's units (as exported)."""

    def act(observations: np.ndarray) -> np.ndarray:
        prepared = np.asarray(preprocessing.observations(np.asarray(observations, np.float32)), np.float32)
        unit = agent.act(np.broadcast_to(prepared, (agent.members, *prepared.shape))).numpy()[member]
        return preprocessing.actions_from_unit(np.clip(unit, -1.0, 1.0))

    return act


def _write_operative_config(run: TrainingRun) -> None:
    """The gin config in use, to DIR/operative_config.gin and TensorBoard (with the data preprocessing)."""
    operative = gin.operative_config_str()
    run.files.write_operative_config(operative)
    details = "\n".join(f"- {key}: `{value}`" for key, value in {
        "dataset": run.metadata.source, "preprocessing": run.preprocessing.describe()["reward"],
        "observation normalisation": run.preprocessing.normalize_observations,
        "compiled with XLA": run.agent.jit_compile,
    }.items())
    for member, writer in enumerate(run.writers):
        with writer.as_default(step=int(run.agent.step)):
            tf.summary.text("config/gin", f"```\n{operative}\n```")
            tf.summary.text("config/data", details)
            hp.hparams(run.hparams_of(member), trial_id=str(run.files.tensorboard_dir(run._seed_dir(member))))


def _next_multiple(step: int, interval: int) -> int:
    return (step // interval + 1) * interval


def _rounded(value: Any) -> Any:
    """Floats rounded to 6 significant digits, so that recomputed statistics compare equal."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _differences(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> List[tuple]:
    """(name, old, new) for every leaf that differs, names dotted (agent.critic_lr)."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append((f"{prefix}{key}", a, b))
    return changes


def _headline(results: List[Dict[str, float]]) -> str:
    for name in ("success_rate", "normalized_score", "return_mean"):
        values = [r[name] for r in results if name in r]
        if values:
            return f"{name} {np.mean(values):.3g}"
    return ""
