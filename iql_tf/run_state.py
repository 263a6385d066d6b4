"""What a training run keeps in its checkpoints, and how it comes back.

Every checkpoint holds, beside the agent (and a stream's position, the online phase's counters), the run's
*record*: JSON of what decided the weights (`training`: the agent's hyperparameters, the compiled path, the
seeds and steps, the dataset and its preprocessing, how batches are drawn), of the settings that did not
(`other`), and of what an export says of the data (`policy`: `policy.metadata.data_record`). A resumed run must
match `training` (`RunState.resume` refuses one that does not, naming what differs) and records changes of
`other` in resumes.json.

`RunState` is the trainer's side: finding the checkpoint to resume, checking, reading and saving it.
`restore_run(workdir)` is everyone else's (`iql_tf.IQL.load`, the tools): the agent of a run's newest intact
checkpoint, rebuilt from its record, with its preprocessing and evaluations, as a `TrainedRun`, which is
also what the trainer hands back when it finishes.
"""

import dataclasses
import json
import pathlib
from typing import Any, Dict, List, Optional, Tuple

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from iql_tf import run_files
from iql_tf.agent import IQLAgent
from iql_tf.checkpoints import Checkpoints
from iql_tf.data import rewards
from iql_tf.data.preprocessing import Preprocessing
from iql_tf.errors import UserError, first_line
from iql_tf.policy import Policy, exported, member_policy
from iql_tf.policy.metadata import agent_inputs
from iql_tf.settings import AgentSettings, RunSettings

RECORD = "record"  # the record's name in the checkpoint
_RECORD_TENSOR = f"{RECORD}/.ATTRIBUTES/VARIABLE_VALUE"


def read_record(reader: Any) -> Dict[str, Any]:
    """The record of a checkpoint (a `tf.train.load_checkpoint` reader)."""
    return json.loads(reader.get_tensor(_RECORD_TENSOR).decode())


def checkpoint_record(checkpoint_prefix: "str | pathlib.Path") -> Dict[str, Any]:
    """The record of the checkpoint at `checkpoint_prefix` (DIR/checkpoints/ckpt-STEP)."""
    return read_record(tf.train.load_checkpoint(str(checkpoint_prefix)))


def training_record(agent: IQLAgent, settings: RunSettings, dataset: str, dataset_content: str,
                    preprocessing: Preprocessing, sampling: Any, environment: Optional[Dict[str, Any]],
                    data_record: Dict[str, Any]) -> Dict[str, Any]:
    """A run's record (see the module docstring). `sampling`: how batches are drawn ("replay buffer", or the
    stream's shuffle buffer); `environment`: the online phase's, for a fine-tuning run."""
    # The number of offline updates decides the weights through the actor's cosine schedule and where the
    # online phase starts; without either, a resumed run may train for longer or shorter.
    decisive = [name for name in RunSettings.TRAINING if name != "num_offline_steps"
                or agent.hyperparameters["actor_cosine_decay"] or settings.num_online_steps]
    training = {
        "agent": agent.hyperparameters,
        "xla": agent.jit_compile,
        **{name: getattr(settings, name) for name in decisive},
        "dataset": dataset,
        "dataset_content": dataset_content,
        "preprocessing": _rounded(preprocessing.describe()),
        "sampling": sampling,
    }
    if environment is not None:
        training["environment"] = environment
    # Images or parts: what the networks take decides the weights' shapes.
    if data_record.get("image_shape") is not None:
        training["observations"] = {name: data_record[name] for name in ("image_shape", "frame_stack")}
    if data_record.get("observation_parts"):
        training["observations"] = {name: data_record[name] for name in ("observation_parts", "frame_stack")}
    other = {field.name: getattr(settings, field.name) for field in dataclasses.fields(RunSettings)
             if field.name not in decisive}
    return {"training": training, "other": other, "policy": data_record}


class RunState:
    """The objects a run's checkpoints hold (`trackables`, and the record), in the run directory `files`."""

    def __init__(self, files: run_files.RunFiles, checkpoints: Checkpoints, trackables: Dict[str, Any]):
        self.files, self.checkpoints = files, checkpoints
        self.record = tf.Variable("", name=RECORD)
        self.checkpoint = tf.train.Checkpoint(**trackables, **{RECORD: self.record})
        self.last_saved: Optional[int] = None  # the step of the newest checkpoint written or restored

    def find(self, start_over: bool) -> Optional[Tuple[int, Dict[str, Any]]]:
        """(step, record) of the newest intact checkpoint to resume from, or None to start at step 0 (with
        `start_over`, after deleting every checkpoint and output of an earlier run). The run's own records
        are checked here too, so that a damaged one stops the run now, not at its first evaluation."""
        if start_over:
            self.checkpoints.delete_all()
            self.files.remove_outputs()
        self.checkpoints.sweep_temporary()
        self.files.check_records()
        found = self.checkpoints.newest_intact()
        if found is None:
            if self.files.has_outputs():
                raise UserError(f"{self.files.path} holds the outputs of an earlier run "
                                f"({', '.join(self.files.has_outputs())}) but no checkpoint to resume it from: training "
                                "from step 0 would overwrite them; use a new --workdir, or bind train.start_over = "
                                "True to replace them")
            return None
        step, reader = found
        return step, read_record(reader)

    def resume(self, found: Optional[Tuple[int, Dict[str, Any]]], current: Dict[str, Any]) -> None:
        """Restores the checkpoint `find` found (after checking that its training matches `current`), or starts
        fresh; either way the checkpoints written from now on record `current`."""
        if found is not None:
            step, recorded = found
            self._check_same_training(recorded, current, step)
            try:
                self.checkpoint.read(self.checkpoints.prefix(step)).assert_existing_objects_matched()
            except AssertionError as error:  # (image runs before the target critics' encoders were saved)
                raise UserError(f"{self.checkpoints.prefix(step)}: lacks some of this run's weights "
                                f"({first_line(error)[:200]}), so it cannot be resumed exactly (checkpoints of image "
                                "runs written before the target critics' encoders were saved); continue in a new "
                                "--workdir, or bind train.start_over = True") from error
            self.last_saved = step
            logging.info("Resumed from %s at step %d.", self.checkpoints.prefix(step), step)
        self.record.assign(json.dumps(current, sort_keys=True))

    def _check_same_training(self, recorded: Dict[str, Any], current: Dict[str, Any], step: int) -> None:
        """Refuses a resume whose training settings differ; records changes to the others."""
        identities = recorded["training"].get("dataset_content"), current["training"].get("dataset_content")
        # iql-tf 0.4 identified the data by its shards' bytes (16 hex digits), which another conversion of the same
        # data could change; now by the data's own sha256 (64). That change of definition is no change of data:
        # resumes.json records it as a setting a resume may change.
        legacy = [len(identity) if isinstance(identity, str) else None for identity in identities] == [16, 64]
        if legacy:
            recorded = {**recorded, "training": {**recorded["training"], "dataset_content": identities[1]}}
        changed = _differences(recorded["training"], current["training"])
        if changed:
            hint = ""
            if "num_online_steps" in {name.split(".")[0] for name, _, _ in changed}:
                hint = " (a run trained offline only cannot grow an online phase: fine-tune in a new --workdir)"
            listing = "; ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in changed)
            raise UserError(f"{self.files.path} was trained with other settings than these ({listing}){hint}: "
                            "resume with the same gin files and bindings, or use a new --workdir")
        other = _differences(recorded["other"], current["other"]) + ([("dataset_content", *identities)] if legacy else [])
        if other:
            logging.info("resuming at step %d with changed settings: %s", step,
                         "; ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in other))
            self.files.record_resume(step, {name: [old, new] for name, old, new in other})

    def save(self, step: int, keep: int) -> None:
        self.checkpoints.save(self.checkpoint, step, keep)
        self.last_saved = step


@dataclasses.dataclass
class TrainedRun:
    """A trained run's agent with what serving and exporting it need: what `iql_tf.IQL` holds after `fit`
    (from the trainer) or `load` (from `restore_run`)."""

    agent: IQLAgent
    preprocessing: Preprocessing
    data_record: Dict[str, Any]  # policy.metadata.data_record of the training data
    seeds: List[int]
    results: List[Dict[str, float]]  # each seed's evaluation at the agent's step ({} without one)
    files: run_files.RunFiles

    @property
    def observation_dim(self) -> int:
        return self.data_record["observation_dim"]

    @property
    def action_dim(self) -> int:
        return self.data_record["action_dim"]

    def policy(self, member: int = 0) -> Policy:
        return member_policy(self.agent, self.preprocessing, member)

    def export(self, directory: "str | pathlib.Path", member: int = 0) -> None:
        """Exports member `member` as the trainer does, with the run's own gin config (that of this process
        where the run directory has none: a loaded agent's process may hold another run's config, or none)."""
        gin_config = self.files.operative_config() or gin.operative_config_str()
        exported.export_member(self.agent, member, self.preprocessing, directory, self.data_record,
                               self.seeds[member], self.results[member], gin_config)


def restore_run(workdir: "str | pathlib.Path", step: Optional[int] = None) -> TrainedRun:
    """The run in `workdir` at its newest intact checkpoint (or at the kept checkpoint of `step`): its agent
    rebuilt from the record and restored, its preprocessing, its evaluations at that step. A directory without
    checkpoints, or without one of `step`, is a UserError."""
    files = run_files.RunFiles(workdir)
    checkpoints = Checkpoints(files.checkpoints)
    if step is None:
        found = checkpoints.newest_intact()
        if found is None:
            raise UserError(f"{workdir}: no checkpoint there; give the run directory of a training run")
    else:
        found = checkpoints.intact(step)
    step, reader = found
    record = read_record(reader)
    if "policy" not in record:
        raise UserError(f"{workdir}: its checkpoint comes from an earlier iql-tf without the policy record; "
                        "re-run its training command once with this version to resume and re-save it")
    training, data = record["training"], record["policy"]
    hyperparameters = dict(training["agent"])
    decay_steps = hyperparameters.pop("actor_decay_steps") or 1
    settings = AgentSettings(**{**hyperparameters, "hidden_dims": tuple(hyperparameters["hidden_dims"])},
                             jit_compile=training["xla"])
    seeds = list(range(training["seed"], training["seed"] + training["num_seeds"]))
    agent = IQLAgent(data["observation_dim"], data["action_dim"], settings, decay_steps, seeds, **agent_inputs(data))
    tf.train.Checkpoint(agent=agent).read(checkpoints.prefix(step)).expect_partial()
    # Exact statistics and bounds from the policy record (the training record's are rounded for comparing).
    normalization = data["observation_normalization"]
    preprocessing = Preprocessing(
        np.asarray(normalization["mean"] if normalization else np.zeros(data["observation_dim"]), np.float32),
        np.asarray(normalization["std"] if normalization else np.ones(data["observation_dim"]), np.float32),
        np.asarray(data["action_low"], np.float32), np.asarray(data["action_high"], np.float32),
        rewards.RewardTransform(**training["preprocessing"]["reward"]), normalization is not None)
    results = files.results()
    return TrainedRun(agent, preprocessing, data, seeds, [results.get((step, seed), {}) for seed in seeds], files)


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
