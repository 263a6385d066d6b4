"""iql-tf as a library: `IQL.from_config(...)`, `.fit(data, ...)`, `.predict(...)`, `.estimate(data)`,
`.export(...)`, `IQL.load(workdir)`.

One implementation with the command line: a config and keyword overrides become the same gin bindings that
`iql-train` parses (so they are checked the same way, an unknown keyword is one line with the closest name,
and the run's operative_config.gin records them), and `fit` runs the same trainer in the same run directory
(resume, the lock, checkpoints, TensorBoard, evaluation, export and finished.json as for the CLI).
"""

import dataclasses
import difflib
import pathlib
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from iql_tf import config
from iql_tf.data.parts import Part, row_count
from iql_tf.errors import UserError
from iql_tf.settings import AgentSettings, DataSettings, RunSettings

if TYPE_CHECKING:  # imported where used: `import iql_tf` stays free of TensorFlow
    from iql_tf import run_state

_SETTINGS = {"IQLAgent": AgentSettings, "train": RunSettings, "make_dataset": DataSettings}
_SET_BY_FIT = {"source": "fit(data)", "num_offline_steps": "fit(steps=...)", "env_id": "fit(eval_env=...)"}


def _binding(name: str, value: Any) -> str:
    """`name = value` for gin, from a keyword argument (checked against the settings' fields)."""
    owners = [prefix for prefix, settings in _SETTINGS.items()
              if name in {field.name for field in dataclasses.fields(settings)}]
    if not owners:
        names = sorted({field.name for settings in _SETTINGS.values() for field in dataclasses.fields(settings)})
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; the settings are {', '.join(names)}"
        raise UserError(f"unknown setting {name!r}{hint}")
    if name in _SET_BY_FIT:
        raise UserError(f"{name!r} is given to {_SET_BY_FIT[name]}, not as a setting")
    return f"{owners[0]}.{name} = {_plain(value)!r}"


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as the Python values that gin reads back (np.float32(0.8) -> 0.8, the shortest
    number that is that float32; an array -> a tuple); anything else as it is."""
    if isinstance(value, np.ndarray):
        return tuple(_plain(item) for item in value)
    if isinstance(value, np.floating):
        return float(str(value))
    if isinstance(value, np.generic):  # integers and bools
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


class IQL:
    """An IQL agent to train on offline data, ask for actions and values, and export.

        agent = IQL.from_config("locomotion", hidden_dims=(64, 64), expectile=0.7)
        agent.fit(data, steps=20_000, workdir="runs/mine", eval_env="Pendulum-v1")
        actions = agent.predict(raw_observations)
    """

    def __init__(self, gin_files: Sequence[str], bindings: Sequence[str]):
        self.gin_files, self.bindings = list(gin_files), list(bindings)
        self.run: Optional["run_state.TrainedRun"] = None  # the trained (or loaded) run
        self.workdir: Optional[pathlib.Path] = None

    @classmethod
    def from_config(cls, config_name: str = "locomotion", gin_bindings: Sequence[str] = (), **settings: Any) -> "IQL":
        """A packaged config (or a gin file's path), then `gin_bindings`, then keyword settings (any field of
        AgentSettings, RunSettings or DataSettings: hidden_dims, expectile, beta, eval_episodes, ...)."""
        bindings = list(gin_bindings) + [_binding(name, value) for name, value in settings.items()]
        agent = cls([config_name], bindings)
        agent._parse([])
        AgentSettings(), RunSettings(), DataSettings()  # every value checked now, not at fit
        return agent

    def _parse(self, extra: Sequence[str]) -> None:
        import gin

        gin.clear_config()
        config.parse_gin(self.gin_files, self.bindings + list(extra))

    def fit(self, data: Any, steps: Optional[int] = None, workdir: Optional[str] = None,
            eval_env: Optional[str] = None, progress: bool = True, **settings: Any) -> "IQL":
        """Trains on `data` (a source path or id, or an in-memory source from `iql_tf.data`) for `steps`
        offline updates (default: the config's) in `workdir` (default runs/CONFIG/DATASET/seedN; re-running
        resumes), evaluating in `eval_env` (a gymnasium id; default: the data's environment). Returns self."""
        from iql_tf import logs, quiet, run_files, trainer

        extra = [_binding(name, value) for name, value in settings.items()]
        if steps is not None:
            extra.append(f"train.num_offline_steps = {steps!r}")
        if eval_env is not None:
            extra.append(f"make_dataset.env_id = {eval_env!r}")
        # The source as gin records it (operative_config.gin, the export): its path or id, or an in-memory
        # source's name, which the settings then replace with the source itself.
        extra.append(f"make_dataset.source = {str(getattr(data, 'name', data))!r}")
        self._parse(extra)
        named, run_settings = DataSettings(), RunSettings()
        if not progress:
            run_settings = dataclasses.replace(run_settings, progress_bar=False)
        logs.show_progress_in_python()
        quiet.quiet_tensorflow()
        self.workdir = pathlib.Path(workdir or run_files.default_workdir(config.config_name(self.gin_files),
                                                                         named.require_source(), run_settings.seeds))
        data_settings = named if isinstance(data, (str, pathlib.Path)) else dataclasses.replace(named, source=data)
        self.run = trainer.train(self.workdir, data_settings, AgentSettings(), run_settings).trained()
        return self

    @property
    def results(self) -> List[Dict[str, float]]:
        """The final evaluation of each seed ({} without evaluation)."""
        return self._trained().results

    def _trained(self) -> "run_state.TrainedRun":
        if self.run is None:
            raise UserError("this IQL has not been trained: call fit(data, ...) or IQL.load(workdir) first")
        return self.run

    def predict(self, observations: Any) -> np.ndarray:
        """The deterministic policy's actions for raw (flattened) observations [N, obs] (or one [obs]), or uint8
        images [N, h, w, c] (or one; frame stacks along the channels), or a dict of parts of either kind (each
        [N, ...], or one observation), in the data's units: what the exported policy answers."""
        run = self._trained()
        batch, single = _observation_batch(observations, run)
        actions = run.policy(0)(batch)
        return actions[0] if single else actions

    def predict_value(self, observations: Any, actions: Any) -> np.ndarray:
        """Q(s, a) (the smaller twin critic, in the preprocessed rewards' units) for raw observations and
        actions in the data's units."""
        import tensorflow as tf

        run = self._trained()
        batch, single = _observation_batch(observations, run)
        acts, _ = _batch(actions, run.action_dim, "actions")
        if len(acts) != row_count(batch):
            raise UserError(f"predict_value: {row_count(batch)} observations but {len(acts)} actions")
        preprocessing = run.preprocessing
        obs = tf.nest.map_structure(lambda values: values[None], batch) if run.agent.takes_images else \
            np.asarray(preprocessing.observations(batch), np.float32)[None]
        unit = np.clip(np.asarray(preprocessing.actions_to_unit(acts), np.float32), -1.0, 1.0)[None]
        q = tf.minimum(*run.agent.critic(tf.nest.map_structure(tf.constant, obs), tf.constant(unit))).numpy()[0]
        return q[0] if single else q

    def estimate(self, data: Any, workdir: Optional[str] = None, initial_states: Any = None,
                 **settings: Any) -> Dict[str, Any]:
        """Fitted Q evaluation of the deterministic policy (the first seed's) on `data`, any source `fit` takes,
        without a simulator: its discounted value from the data's initial states with a 95 % interval, in the
        data's reward units (`iql_tf/ope/estimation.py`). `settings`: `fqe.*` fields (num_steps, discount, ...);
        `workdir`: where its checkpoints and TensorBoard scalars go, to resume from; `initial_states`: raw
        observations [K, size] deployments start from, where the value is read out (default: the data's
        trajectory starts)."""
        from iql_tf.ope import estimation
        from iql_tf.policy.metadata import PolicyMetadata
        from iql_tf.settings import FQESettings

        run = self._trained()
        try:
            fqe = FQESettings(**settings)
        except TypeError as error:
            names = ", ".join(field.name for field in dataclasses.fields(FQESettings))
            raise UserError(f"estimate(): {error}; its settings are {names}") from error
        metadata = PolicyMetadata(**run.data_record, seed=run.seeds[0], step=int(run.agent.step), evaluation={},
                                  gin_config="")
        identity = f"{self.workdir} seed {run.seeds[0]} step {metadata.step}"
        return estimation.estimate_value(run.policy(0), metadata, data, fqe, workdir, policy_identity=identity,
                                         initial_observations=initial_states)

    def export(self, path: str) -> str:
        """Writes the policy (SavedModel + TFLite + ONNX, raw observations in, actions in the data's units) to `path`."""
        self._trained().export(path)
        return path

    @classmethod
    def load(cls, workdir: str) -> "IQL":
        """The agent of a run directory (trained by `fit` or `iql-train`) at its newest intact checkpoint."""
        from iql_tf import run_state

        agent = cls([], [])
        agent.workdir = pathlib.Path(workdir)
        agent.run = run_state.restore_run(workdir)
        return agent


def _observation_batch(values: Any, run: "run_state.TrainedRun") -> "tuple[Any, bool]":
    """Observations as the run's policy takes them: `_batch`'s vectors, uint8 images [N, h, w, c] (or one), or a
    dict of parts (`_parts_batch`)."""
    if run.agent.parts:
        return _parts_batch(values, run.agent.parts)
    shape = run.agent.image_shape
    if not shape:
        return _batch(values, run.observation_dim, "observations")
    return _image_batch(values, shape, "observations")


def _image_batch(values: Any, shape: Sequence[int], what: str) -> "tuple[np.ndarray, bool]":
    """uint8 images [N, *shape] from [N, *shape] or one [*shape] (then single)."""
    array = np.asarray(values)
    single = array.shape == tuple(shape)
    array = array[None] if single else array
    if array.dtype != np.uint8 or array.shape[1:] != tuple(shape):
        raise UserError(f"{what} of shape {list(np.shape(values))} and dtype {array.dtype}: expected uint8 "
                        f"images [N, {', '.join(map(str, shape))}] or one [{', '.join(map(str, shape))}], as the "
                        "training data")
    return array, single


def _parts_batch(values: Any, parts: Sequence[Part]) -> "tuple[Dict[str, np.ndarray], bool]":
    """A dict with each of `parts` (images stacked), all [N, ...] or all one observation (then single); a missing or
    unknown part, or parts of different batch sizes, is a UserError."""
    names = [part.name for part in parts]
    if not isinstance(values, Mapping):
        raise UserError(f"observations: a {type(values).__name__}, but the policy takes a dict of the parts "
                        f"{', '.join(names)}")
    missing, unknown = [name for name in names if name not in values], [name for name in values if name not in names]
    if missing or unknown:
        raise UserError("observations: " + (f"missing the part(s) {', '.join(missing)}" if missing else
                                             f"unknown part(s) {', '.join(map(str, unknown))}") +
                        f"; the policy takes the parts {', '.join(names)}")
    batch, singles = {}, set()
    for part in parts:
        what = f"observations[{part.name!r}]"
        values_of_part = values[part.name]
        batch[part.name], single = (_image_batch(values_of_part, part.shape, what) if part.image else
                                    _batch(values_of_part, part.shape[0], what))
        singles.add(single)
    sizes = {len(array) for array in batch.values()}
    if len(singles) > 1 or len(sizes) > 1:
        raise UserError("observations: its parts hold different numbers of observations; give each part [N, ...] "
                        "alike, or one observation each")
    return batch, singles.pop()


def _batch(values: Any, width: int, what: str) -> "tuple[np.ndarray, bool]":
    """[N, width] float32 from [N, width] or [width] (then single); another shape, or a value that is not a
    finite number, is a UserError (the networks would answer NaN: the export does, for a NaN observation)."""
    try:
        array = np.asarray(values, np.float32)
    except (TypeError, ValueError) as error:
        raise UserError(f"{what}: not an array of numbers ({error})") from error
    single = array.ndim == 1
    array = array[None] if single else array
    if array.ndim != 2 or array.shape[1] != width:
        raise UserError(f"{what} of shape {list(np.shape(values))}: expected [N, {width}] or [{width}] (flattened "
                        "as the training data)")
    rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if rows.size:
        value = array[rows[0]][~np.isfinite(array[rows[0]])][0]
        raise UserError(f"{what} row {rows[0]} holds {value} ({rows.size} row(s) in all): the policy's answer would be "
                        "NaN; repair or drop those rows")
    return array, single
