"""What a training run is configured with, as three frozen dataclasses, each one gin configurable:
`DataSettings` (`make_dataset.*`), `AgentSettings` (`IQLAgent.*`) and `RunSettings` (`train.*`); and what an
off-policy estimate is, `FQESettings` (`fqe.*`).

The command line parses gin into these objects and the Python API builds them from keyword arguments; both
go through the same checks (`__post_init__`), so a mistake reads the same either way: one line naming the
setting, its value and what it must be. TensorFlow-free, so that planning a sweep or parsing a config never
imports it.
"""

import dataclasses
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import gin

from iql_tf.errors import UserError, is_integer, is_number
from iql_tf.options import ENCODERS, KERNEL_INITS, RLDS_FINAL_STEPS, UPDATE_ORDERS, check_reward_preprocessing

FIX = "fix it in the gin file or --gin_bindings"

def _fail(name: str, value: Any, expected: str) -> None:
    raise UserError(f"{name} = {value!r} must be {expected}; {FIX}")


def _hidden_dims(name: str, value: Any) -> Tuple[int, ...]:
    """`value` as a tuple of layer sizes, or a UserError naming the setting `name`."""
    if not (isinstance(value, (tuple, list)) and value and all(is_integer(units) and units > 0 for units in value)):
        _fail(name, value, "a tuple of positive sizes, e.g. (256, 256)")
    return tuple(int(units) for units in value)


def _check_integers(settings: Any, prefix: str, minimums: Sequence[Tuple[str, int]]) -> None:
    """Each named field of `settings` an integer at least its minimum, or a UserError naming `prefix.field`."""
    for name, minimum in minimums:
        value = getattr(settings, name)
        if not is_integer(value) or value < minimum:
            kind = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"
            _fail(f"{prefix}.{name}", value, f"a {kind} integer (write 1000000, not 1e6)")


@gin.configurable("make_dataset")
@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The `make_dataset.*` gin parameters: which data, and how it is prepared for the networks.

    Attributes:
      source: a converted directory, a D4RL-style .npz/.hdf5/.h5 file, a .csv / .parquet table, a Minari
        dataset id in the local Minari root (the project's generated ids are generated when missing), or an
        OGBench single-task name `ogbench:cube-single-play-singletask-task2-v0`; from Python also an in-memory
        source (`iql_tf.data.from_arrays`, `from_pandas`, `from_tf_dataset`).
      ogbench_dir: the folder of OGBench's dataset files for `ogbench:` sources; None: OGBench's default,
        ~/.ogbench/data.
      columns: for tables, which columns hold each field (see `data/tables.py`); None: the default names.
      reward_preprocessing: 'none', 'locomotion' or 'antmaze' (see `data/rewards.py`).
      normalize_observations: train on (s - mean) / (std + 1e-3) with the dataset's statistics; evaluation
        and the exported policy apply the same, so deployment feeds raw observations. Off in the paper.
      cache_dir: where conversions of non-converted sources are kept; default $IQL_TF_DATA_DIR or
        ~/.iql_tf/datasets.
      download: let Minari (or OGBench) download a dataset that is not local (otherwise a missing id is an
        error).
      env_id, env_kwargs: evaluation environment to record for sources that carry none (npz/HDF5), or to
        override a Minari dataset's; an error with a converted directory (its metadata.json fixes the env).
      action_bounds: (low, high) of the actions of a source that names no environment (default (-1, 1)).
      streaming: read the converted shards through tf.data while training (True) or hold the dataset in memory
        (False); None: stream when the converted dataset is larger than `memory_budget_gb`.
      rlds_as_is: for RLDS / TFDS sources, stream the dataset's own shards, never converted (True), or convert
        it once and hold or stream the conversion (False); None: as it is exactly when it would be streamed
        (`streaming` not False) and its records exceed `memory_budget_gb` (docs/data.md has the measured cost).
      memory_budget_gb: the largest converted dataset held in memory when `streaming` is None; None: a quarter
        of this machine's physical memory.
      shuffle_buffer: rows in the streaming shuffle buffer (the larger, the closer to uniform sampling); None:
        100,000, or for images as many as fit in 256 MB (`streaming.default_shuffle_buffer`).
      tfds_data_dir: for `tfds:NAME` sources, TFDS's data folder (default TFDS's own, ~/tensorflow_datasets).
      observation_keys, action_keys: for RLDS / TFDS sources whose observations or actions are dicts, the
        parts read, in order ('a/b' for nested ones); None: every numeric part, sorted.
      rlds_final_step: 'observation' (RLDS's convention: an episode's last step holds only the final
        observation) or 'transition' (its action and reward are a transition too, terminal where `is_terminal`:
        robot datasets with the reward on the last step).
      frame_stack: for image observations, the frames each observation stacks along its channels (the
        trajectory's last k, oldest first, the first repeated at its start; `data/frame_stacks.py`); 1: none.
      validation_fraction: hold out this fraction of the trajectories (whole ones, drawn with a fixed seed; an
        OGBench source's own -val split instead) as validation data, on which the trainer logs TD errors and
        value statistics at each evaluation (TensorBoard `validation/*`); 0: train on everything.
    """

    source: Any = None
    columns: Optional[Mapping[str, Any]] = None
    ogbench_dir: Optional[str] = None
    reward_preprocessing: str = "none"
    normalize_observations: bool = False
    cache_dir: Optional[str] = None
    download: bool = False
    env_id: Optional[str] = None
    env_kwargs: Optional[Mapping[str, Any]] = None
    action_bounds: Optional[Tuple[Any, Any]] = None
    streaming: Optional[bool] = None
    rlds_as_is: Optional[bool] = None
    memory_budget_gb: Optional[float] = None
    shuffle_buffer: Optional[int] = None
    validation_fraction: float = 0.0
    tfds_data_dir: Optional[str] = None
    observation_keys: Optional[Sequence[str]] = None
    action_keys: Optional[Sequence[str]] = None
    rlds_final_step: str = "observation"
    frame_stack: int = 1

    def __post_init__(self):
        if self.source is not None and not isinstance(self.source, (str, os.PathLike)) \
                and not hasattr(self.source, "arrays"):
            _fail("make_dataset.source", self.source, "a path, a dataset id or an in-memory source "
                  "(iql_tf.data.from_arrays, ...)")
        for name in ("streaming", "rlds_as_is"):
            if not (getattr(self, name) is None or isinstance(getattr(self, name), bool)):
                _fail(f"make_dataset.{name}", getattr(self, name), "None (automatic), True or False")
        if not (self.memory_budget_gb is None or _number(self.memory_budget_gb) > 0):
            _fail("make_dataset.memory_budget_gb", self.memory_budget_gb, "None or a positive number of GB")
        if self.rlds_final_step not in RLDS_FINAL_STEPS:
            _fail("make_dataset.rlds_final_step", self.rlds_final_step, f"one of {', '.join(RLDS_FINAL_STEPS)}")
        for name in ("observation_keys", "action_keys"):
            keys = getattr(self, name)
            if keys is not None and not (isinstance(keys, (list, tuple)) and keys
                                         and all(isinstance(key, str) for key in keys)):
                _fail(f"make_dataset.{name}", keys, "None or a list of part names, e.g. ['state', 'gripper']")
        if not 0.0 <= _number(self.validation_fraction) < 1.0:
            _fail("make_dataset.validation_fraction", self.validation_fraction, "a number in [0, 1) (0: no held-out "
                  "split)")
        if not (is_integer(self.frame_stack) and self.frame_stack > 0):
            _fail("make_dataset.frame_stack", self.frame_stack, "a positive integer (1: no stacking)")
        if not (self.shuffle_buffer is None or is_integer(self.shuffle_buffer) and self.shuffle_buffer > 0):
            _fail("make_dataset.shuffle_buffer", self.shuffle_buffer, "None (the default) or a positive integer")
        if self.columns is not None and not isinstance(self.columns, Mapping):
            _fail("make_dataset.columns", self.columns, "a dict of field -> column name(s), e.g. "
                  "{'rewards': 'reward'}")
        if not (self.ogbench_dir is None or isinstance(self.ogbench_dir, (str, os.PathLike))):
            _fail("make_dataset.ogbench_dir", self.ogbench_dir, "None (OGBench's default folder) or a folder path")
        check_reward_preprocessing(self.reward_preprocessing)
        for name in ("normalize_observations", "download"):
            if not isinstance(getattr(self, name), bool):
                _fail(f"make_dataset.{name}", getattr(self, name), "True or False")
        if self.env_kwargs is not None and not isinstance(self.env_kwargs, Mapping):
            _fail("make_dataset.env_kwargs", self.env_kwargs, "a dict of the environment's keyword arguments")

    def memory_budget_bytes(self) -> float:
        if self.memory_budget_gb is not None:
            return float(self.memory_budget_gb) * 1e9
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4

    def require_source(self) -> Any:
        if self.source is None or self.source == "":
            raise UserError("no dataset: give a --gin_file (e.g. --gin_file=quickstart) or bind make_dataset.source")
        return str(self.source) if isinstance(self.source, os.PathLike) else self.source


# Options added since 0.4 (OGBench's IQL, images), with the value that means what 0.3 did.
_LATER_OPTIONS = {"critic_layer_norm": False, "constant_std": False, "tanh_mean": True, "kernel_init": "orthogonal",
                  "update_order": "sequential", "encoder": "impala_small", "augmentation_probability": 0.0,
                  "shared_encoder": False}


@gin.configurable("IQLAgent")
@dataclasses.dataclass(frozen=True)
class AgentSettings:
    """The `IQLAgent.*` gin parameters: networks, losses and optimisers (paper Appendix B).

    Attributes:
      hidden_dims: sizes of the hidden layers of every network.
      activation: a Keras activation name, or 'gelu_tanh' (GELU's tanh approximation, Flax's nn.gelu).
      expectile: tau of the value's expectile regression (0.5 gives one-step SARSA values).
      beta: inverse temperature of AWR; 0 turns policy extraction into behaviour cloning.
      discount: gamma.
      target_update_rate: Polyak rate alpha of the target critics.
      value_lr, critic_lr, actor_lr: Adam learning rates (epsilon 1e-8, as optax).
      actor_cosine_decay: cosine decay of the actor lr to 0 over the offline phase.
      actor_dropout_rate: dropout after each hidden layer of the actor, in training only.
      critic_layer_norm: layer normalisation after each hidden activation of the value and critic networks
        (not in the paper; OGBench's IQL baselines use it).
      constant_std: a policy std fixed at 1 instead of a learned state-independent one (not in the paper;
        OGBench's IQL baselines use it: AWR then weights a squared error of the mean).
      tanh_mean: the policy mean is tanh(Dense(h)) (the IQL reference's); False: Dense(h), clipped to [-1, 1]
        where actions are taken (OGBench's IQL baselines: actions at the bounds are reached without saturating).
      kernel_init: how every network's kernels start: 'orthogonal' (gain sqrt(2), the IQL reference's) or
        'glorot_uniform' (OGBench's IQL baselines: Glorot uniform, the policy mean layer scaled by 0.01).
      update_order: 'sequential' (the IQL reference's: value, then the actor and the critics on the updated value
        network, the actor's advantages from the target critics) or 'joint' (OGBench's IQL baselines: one summed
        loss, every term on the parameters from before the step, the actor's advantages from the current critics).
      encoder: how image observations are encoded (vectors enter the networks as they are): 'impala_small' (the
        FQL repository's IMPALA ResNet) or 'conv_small' (three convolutions, for CPUs); see `encoders.py`. The
        value network, the critics (both Qs share one) and the actor each have their own, as the FQL repository.
      shared_encoder: one image encoder for the value network, the critics and the actor: the critics', trained by
        their TD loss alone (the value and policy losses see its features without a gradient, as DrQ's actor
        does); the target critics keep their own copy. False: one each, the FQL repository's choice.
      augmentation_probability: the probability that a batch of images is augmented by random shifts (the FQL
        repository's p_aug: each image, with its next image, shifted by up to 3 pixels, edges repeated); 0: never.
      batch_size: transitions per update.
      jit_compile: compile the updates with XLA (True) or TensorFlow's kernels (False); None lets the trainer
        time both on this machine and take the faster (`fastest_path`).
    """

    hidden_dims: Tuple[int, ...] = (256, 256)
    activation: str = "relu"
    expectile: float = 0.7
    beta: float = 3.0
    discount: float = 0.99
    target_update_rate: float = 0.005
    value_lr: float = 3e-4
    critic_lr: float = 3e-4
    actor_lr: float = 3e-4
    actor_cosine_decay: bool = True
    actor_dropout_rate: Optional[float] = None
    critic_layer_norm: bool = False
    constant_std: bool = False
    tanh_mean: bool = True
    kernel_init: str = "orthogonal"
    update_order: str = "sequential"
    encoder: str = "impala_small"
    augmentation_probability: float = 0.0
    shared_encoder: bool = False
    batch_size: int = 256
    jit_compile: Optional[bool] = None

    def __post_init__(self):
        object.__setattr__(self, "hidden_dims", _hidden_dims("IQLAgent.hidden_dims", self.hidden_dims))
        numbers = [
            ("expectile", 0.0 < _number(self.expectile) < 1.0, "a number in (0, 1)"),
            ("beta", _number(self.beta) >= 0.0, "a number >= 0 (0 is behaviour cloning)"),
            ("discount", 0.0 <= _number(self.discount) <= 1.0, "a number in [0, 1]"),
            ("target_update_rate", 0.0 < _number(self.target_update_rate) <= 1.0, "a number in (0, 1]"),
            ("value_lr", _number(self.value_lr) > 0, "a positive number"),
            ("critic_lr", _number(self.critic_lr) > 0, "a positive number"),
            ("actor_lr", _number(self.actor_lr) > 0, "a positive number"),
        ]
        for name, ok, expected in numbers:
            if not ok:
                _fail(f"IQLAgent.{name}", getattr(self, name), expected)
        if not (self.actor_dropout_rate is None or 0.0 <= _number(self.actor_dropout_rate) < 1.0):
            _fail("IQLAgent.actor_dropout_rate", self.actor_dropout_rate, "None or a number in [0, 1)")
        if not (is_integer(self.batch_size) and self.batch_size > 0):
            _fail("IQLAgent.batch_size", self.batch_size, "a positive integer")
        if not (self.jit_compile is None or isinstance(self.jit_compile, bool)):
            _fail("IQLAgent.jit_compile", self.jit_compile, "None (the faster path on this machine), True (XLA) or "
                  "False")
        for name in ("actor_cosine_decay", "critic_layer_norm", "constant_std", "tanh_mean", "shared_encoder"):
            if not isinstance(getattr(self, name), bool):
                _fail(f"IQLAgent.{name}", getattr(self, name), "True or False")
        if not 0.0 <= _number(self.augmentation_probability) <= 1.0:
            _fail("IQLAgent.augmentation_probability", self.augmentation_probability, "a number in [0, 1]")
        for name, choices in (("kernel_init", KERNEL_INITS), ("update_order", UPDATE_ORDERS), ("encoder", ENCODERS)):
            if getattr(self, name) not in choices:
                _fail(f"IQLAgent.{name}", getattr(self, name), " or ".join(repr(choice) for choice in choices))
        if not isinstance(self.activation, str):
            _fail("IQLAgent.activation", self.activation, "the name of a Keras activation, e.g. 'relu'")

    def hyperparameters(self, actor_decay_steps: int) -> Dict[str, Any]:
        """What decides the training besides the seeds, as JSON (the compiled path is recorded apart)."""
        record = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                  if field.name != "jit_compile"}
        record.update(hidden_dims=list(self.hidden_dims), expectile=float(self.expectile), beta=float(self.beta),
                      discount=float(self.discount), target_update_rate=float(self.target_update_rate),
                      value_lr=float(self.value_lr), critic_lr=float(self.critic_lr), actor_lr=float(self.actor_lr),
                      augmentation_probability=float(self.augmentation_probability),
                      actor_decay_steps=int(actor_decay_steps) if self.actor_cosine_decay else None)
        for name, default in _LATER_OPTIONS.items():  # recorded when changed, so that runs of 0.3 still resume
            if record[name] == default:
                del record[name]
        return record


@gin.configurable("train")
@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The `train.*` gin parameters.

    Attributes:
      num_offline_steps: gradient updates on the offline dataset (also the length of the actor's cosine decay).
      num_online_steps: environment steps of online fine-tuning after the offline phase, one gradient update
        each (0: offline only).
      seed: seeds the networks, batches, dropout, exploration and evaluation episodes.
      num_seeds: independent agents trained together, seeds `seed` ... `seed + num_seeds - 1`, through one
        compiled step (each logged, checkpointed, evaluated and exported on its own).
      exploration_noise: std of Gaussian noise added to the sampled action online (in [-1, 1] units).
      steps_per_call: offline updates fused in one compiled call (K); boundaries are always reached exactly.
      log_interval / eval_interval / checkpoint_interval: in gradient updates.
      eval_episodes: episodes per evaluation (0, or a dataset without environment: no evaluation).
      checkpoints_to_keep: newest checkpoints kept.
      export_on_eval: also export the policy at every evaluation, not only at the end.
      progress_bar: show a progress bar on stderr.
      start_over: train from step 0 even where checkpoints exist (they are deleted).
    """

    num_offline_steps: int = 1_000_000
    num_online_steps: int = 0
    seed: int = 0
    num_seeds: int = 1
    exploration_noise: float = 0.0
    steps_per_call: int = 1000
    log_interval: int = 1000
    eval_interval: int = 5000
    eval_episodes: int = 10
    checkpoint_interval: int = 10_000
    checkpoints_to_keep: int = 2
    export_on_eval: bool = False
    progress_bar: bool = True
    start_over: bool = False

    # What a resumed run may not change: these decide the weights it ends with.
    TRAINING = ("num_offline_steps", "num_online_steps", "seed", "num_seeds", "exploration_noise")

    def __post_init__(self):
        _check_integers(self, "train", [("num_offline_steps", 0), ("num_online_steps", 0), ("seed", 0), ("num_seeds", 1),
                                        ("steps_per_call", 1), ("log_interval", 1), ("eval_interval", 1),
                                        ("eval_episodes", 0), ("checkpoint_interval", 1), ("checkpoints_to_keep", 1)])
        if self.num_offline_steps + self.num_online_steps == 0:
            raise UserError("train.num_offline_steps and train.num_online_steps are both 0: nothing to train")
        if not is_number(self.exploration_noise) or not self.exploration_noise >= 0:
            _fail("train.exploration_noise", self.exploration_noise, "a number >= 0")
        if self.num_online_steps and self.num_seeds > 1:
            raise UserError("train.num_seeds > 1 with train.num_online_steps: fine-tuning trains one seed per run; "
                            "run one per seed (python -m iql_tf.sweep --seeds=...)")

    @property
    def total_steps(self) -> int:
        return self.num_offline_steps + self.num_online_steps

    @property
    def seeds(self) -> Tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.num_seeds))


def _number(value: Any) -> float:
    """The value if it is a number, else NaN (which fails every range check)."""
    return float(value) if is_number(value) else float("nan")



@gin.configurable("fqe")
@dataclasses.dataclass(frozen=True)
class FQESettings:
    """The `fqe.*` gin parameters of fitted Q evaluation (`iql_tf/ope`), the estimate of a fixed policy's value
    from a dataset without a simulator.

    Attributes:
      num_steps: gradient updates of the Q network.
      hidden_dims, activation: its MLP over concat(normalised s, a in [-1, 1]).
      learning_rate: Adam's (epsilon 1e-8), 1e-4 as d3rlpy's FQE.
      batch_size: transitions per update.
      discount: gamma of the estimated value.
      target_update_rate: Polyak rate of the target Q network, as IQL's critics.
      steps_per_call: updates fused in one compiled call (K).
      log_interval: in updates: TensorBoard scalars and the progress line.
      checkpoint_interval: in updates, when the estimate is given a working directory to resume from.
      bootstrap_samples: resamples of the initial states behind the estimate's 95 % interval.
      seed: seeds the Q network, its batches and the bootstrap.
      jit_compile: compile the updates with XLA (True) or TensorFlow's kernels (False).
      success_return: a trajectory whose return reaches it counts as a success, for the soft off-policy
        classification estimate; None: for rewards of 0 and 1 only, a trajectory that earned a 1, else no
        soft OPC.
      ensemble_size: Q networks; above 1, bootstrapped FQE: each on its own resample of the transitions, and
        the estimate carries their spread and a pessimistic value (`iql_tf/ope/estimation.py`).
    """

    num_steps: int = 20_000
    hidden_dims: Tuple[int, ...] = (256, 256)
    activation: str = "relu"
    learning_rate: float = 1e-4
    batch_size: int = 256
    discount: float = 0.99
    target_update_rate: float = 0.005
    steps_per_call: int = 1000
    log_interval: int = 1000
    checkpoint_interval: int = 5000
    bootstrap_samples: int = 2000
    seed: int = 0
    jit_compile: bool = True
    success_return: Optional[float] = None
    ensemble_size: int = 1

    # What a resumed estimate may not change: these decide the Q network it ends with.
    TRAINING = ("num_steps", "hidden_dims", "activation", "learning_rate", "batch_size", "discount",
                "target_update_rate", "seed", "ensemble_size")

    def __post_init__(self):
        object.__setattr__(self, "hidden_dims", _hidden_dims("fqe.hidden_dims", self.hidden_dims))
        _check_integers(self, "fqe", [("num_steps", 1), ("batch_size", 1), ("steps_per_call", 1), ("log_interval", 1),
                                      ("checkpoint_interval", 1), ("bootstrap_samples", 1), ("seed", 0),
                                      ("ensemble_size", 1)])
        numbers = [("learning_rate", _number(self.learning_rate) > 0, "a positive number"),
                   ("discount", 0.0 <= _number(self.discount) < 1.0, "a number in [0, 1)"),
                   ("target_update_rate", 0.0 < _number(self.target_update_rate) <= 1.0, "a number in (0, 1]")]
        for name, ok, expected in numbers:
            if not ok:
                _fail(f"fqe.{name}", getattr(self, name), expected)
        if self.success_return is not None and not is_number(self.success_return):
            _fail("fqe.success_return", self.success_return, "a number, or None")
        if not isinstance(self.jit_compile, bool):
            _fail("fqe.jit_compile", self.jit_compile, "True (XLA) or False")
        if not isinstance(self.activation, str):
            _fail("fqe.activation", self.activation, "the name of a Keras activation, e.g. 'relu'")

    def record(self) -> Dict[str, Any]:
        """What decides the estimate, as JSON (a single network's without ensemble_size, as estimates made
        before ensembles existed recorded it, so that they resume)."""
        return {name: list(getattr(self, name)) if name == "hidden_dims" else getattr(self, name)
                for name in self.TRAINING if name != "ensemble_size" or self.ensemble_size > 1}
