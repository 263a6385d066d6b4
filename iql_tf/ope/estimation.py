"""A fixed policy's value estimated from a dataset by fitted Q evaluation (`fqe.py`), in the data's return units.

1. The data: any source `make_dataset` takes, converted once and held in memory, with raw rewards.
2. The table: observations normalised with the dataset's statistics, actions in [-1, 1] by the dataset's
   bounds (the policy's own, checked equal), and the policy's action at every next observation, computed once
   (the policy is fixed). Rewards are scaled by c = 1 / max |r| so that the targets stay near 1 / (1 - discount)
   whatever the reward's units; the estimate is divided by c again, which undoes the scale exactly.
3. The training: `fqe.num_steps` updates in compiled calls of K; with a working directory, TensorBoard scalars
   (`fqe/td_loss`, `fqe/q_mean`, `fqe/target_mean`) and checkpoints there, and a later call with the same
   directory resumes, refusing one whose policy, data or settings differ.
4. The estimate: the mean of Q(s0, pi(s0)) over the dataset's initial states (the first state of every
   trajectory), the discounted value, with a 95 % percentile bootstrap interval over those states; where the
   episode length H is known and the rewards are not success labels, also as an undiscounted-equivalent
   return, the value times H (1 - discount) / (1 - discount^H): the undiscounted return of a policy that earns
   the same reward at every step.
"""

import pathlib
from typing import Any, Dict, Optional

import numpy as np
from absl import logging

from iql_tf import files, json_records
from iql_tf.data.rewards import trajectory_lengths, trajectory_returns, trajectory_starts
from iql_tf.errors import UserError
from iql_tf.policy import Policy
from iql_tf.policy.metadata import PolicyMetadata
from iql_tf.settings import FQESettings

RECORD_FILE = "fqe.json"
ESTIMATE_FILE = "estimate.json"
_POLICY_BATCH = 4096  # observations per call of the policy while the table is built
_UNITS_APART = 10.0  # see _check_observation_units


def estimate_value(policy: Policy, policy_metadata: PolicyMetadata, source: Any, settings: FQESettings,
                   workdir: "str | pathlib.Path | None" = None, cache_dir: Optional[str] = None,
                   policy_identity: str = "", initial_observations: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """FQE's estimate of `policy`'s value on `source` (see the module's docstring): a dict with `value` (the
    discounted value from the initial states), `value_low` / `value_high` (its 95 % interval), `initial_states`,
    `discount`, `fqe_steps`, `return_equivalent` (with its interval) where the episode length is known and the
    rewards are not success labels, and `soft_opc` where they are.
    `policy_identity` names the policy in the working directory's record (an export's checksums).
    `initial_observations` [K, observation size]: the states the policy will start from where deployed (raw, as
    the policy takes them), read out instead of the data's trajectory starts; the Q network is the same."""
    from iql_tf.data import pipeline
    from iql_tf.ope.fqe import FittedQ
    from iql_tf.settings import DataSettings

    _check_reads_vectors(policy_metadata, source)
    # The data as its source gives it, whatever a training config in this process binds for make_dataset (gin
    # fills the fields not given): raw rewards, raw observations, every trajectory. A policy trained without a
    # simulator knows its action units only from make_dataset.action_bounds, which it carries: data of its
    # task, which names no environment either, is read in those units.
    own_bounds = policy_metadata.env_id is None and not (np.all(np.equal(policy_metadata.action_low, -1.0)) and
                                                         np.all(np.equal(policy_metadata.action_high, 1.0)))
    dataset = pipeline.make_dataset(DataSettings(
        source=source, cache_dir=cache_dir, streaming=False, reward_preprocessing="none",
        normalize_observations=False, validation_fraction=0.0,
        action_bounds=(list(policy_metadata.action_low), list(policy_metadata.action_high)) if own_bounds else None))
    metadata = dataset.metadata
    if metadata.images:
        what = "parts (with images)" if metadata.parts else "images"
        raise UserError(f"{metadata.source}: its observations are {what}, and fitted Q evaluation reads vector "
                        "observations; estimate with a dataset of the vectors the policy takes")
    check_policy_fits(policy_metadata, metadata)
    tensors = {key: value.numpy() for key, value in dataset.tensors.items()}
    preprocessing = pipeline.preprocessing_of(metadata, "none", normalize_observations=True)
    starts = initial_states(tensors["dones"], metadata.source) if initial_observations is None else \
        trajectory_starts(tensors["dones"])
    reward_scale = 1.0 / max(float(np.max(np.abs(tensors["rewards"]))), 1e-8)

    def inputs(observations: np.ndarray, unit_actions: np.ndarray) -> np.ndarray:
        return np.concatenate([preprocessing.observations(observations), unit_actions], axis=-1).astype(np.float32)

    def policy_actions(observations: np.ndarray) -> np.ndarray:
        actions = np.concatenate([policy(observations[i:i + _POLICY_BATCH])
                                  for i in range(0, len(observations), _POLICY_BATCH)])
        return np.clip(preprocessing.actions_to_unit(actions), -1.0, 1.0)

    logging.info("FQE: the policy's actions at %d next observations", len(tensors["rewards"]))
    table = {"inputs": inputs(tensors["observations"], tensors["actions"]),
             "next_inputs": inputs(tensors["next_observations"], policy_actions(tensors["next_observations"])),
             "rewards": tensors["rewards"] * reward_scale, "masks": 1.0 - tensors["terminals"]}
    start_observations = tensors["observations"][starts] if initial_observations is None else \
        check_initial_observations(initial_observations, tensors["observations"].shape[1])
    start_inputs = inputs(start_observations, policy_actions(start_observations))
    rewards, dones = tensors["rewards"], tensors["dones"]
    del tensors
    fitted = FittedQ(table, settings)
    del table
    record = {"settings": settings.record(), "dataset": metadata.content_checksum, "policy": policy_identity}
    _train(fitted, settings, record, workdir)

    member_start_values = fitted.values(start_inputs).astype(np.float64) / reward_scale
    value, low, high = bootstrap_mean(member_start_values.mean(axis=0), settings.bootstrap_samples, settings.seed)
    estimate = {"value": value, "value_low": low, "value_high": high, "initial_states": int(len(start_inputs)),
                "initial_states_from": "the data's trajectory starts" if initial_observations is None else "given",
                "discount": float(settings.discount), "fqe_steps": int(fitted.step.numpy()),
                "dataset": metadata.source}
    if settings.ensemble_size > 1:
        # Bootstrapped FQE's epistemic uncertainty: the spread of the members' values. Where the policy acts
        # unlike the data, the members extrapolate apart; the value less that spread is a pessimistic reading
        # (shown beside the mean, which ranks).
        members = member_start_values.mean(axis=1)
        spread = float(np.std(members))
        estimate.update(member_values=[float(v) for v in members], member_spread=spread,
                        value_pessimistic=value - spread)
    successes = successful_transitions(rewards, dones, settings.success_return)
    if successes is not None and 0 < successes.sum() < len(successes):
        # Soft off-policy classification (Irpan et al., 2019), as d3rlpy's soft_opc_scorer computes it: the mean Q
        # of the successful trajectories' transitions minus the mean Q of all, here with the policy's FQE Q.
        values = fitted.table_values().mean(axis=0).astype(np.float64) / reward_scale
        estimate.update(soft_opc=float(values[successes].mean() - values.mean()),
                        successful_trajectories=int(np.count_nonzero(successes[starts])))
    horizon = metadata.max_episode_steps
    if horizon and successes is None:
        # Not for success labels: their value is a discounted chance of success, which no reward earned at every
        # step reads like (0.66 on the quickstart's data would read as a return of 2.1 where at most 1 is earned).
        factor = horizon * (1.0 - settings.discount) / (1.0 - settings.discount ** horizon)
        estimate.update(return_equivalent=value * factor, return_equivalent_low=low * factor,
                        return_equivalent_high=high * factor, horizon=int(horizon))
    if workdir is not None:
        files.write_json(pathlib.Path(workdir) / ESTIMATE_FILE, estimate)
    return estimate


def _check_reads_vectors(policy: PolicyMetadata, source: Any) -> None:
    """FQE's Q network reads vectors: a policy of images (or of parts) is refused before its data is read."""
    if policy.image_shape is not None or policy.observation_parts:
        data = getattr(source, "name", source)
        reads = "images" if policy.image_shape is not None else "observations of parts"
        raise UserError(f"the policy (trained on {policy.dataset}) against the dataset {data}: the policy reads "
                        f"{reads}, and fitted Q evaluation reads vector observations only so far; score it in an "
                        "environment (iql-evaluate EXPORT --env_id=...)")


def check_policy_fits(policy: PolicyMetadata, data: Any) -> None:
    """The policy reads the dataset's observations (same flattening and size) and acts in its action units
    (same size and bounds); otherwise a UserError saying which differs."""
    where = f"the policy (trained on {policy.dataset}) against the dataset {data.source}"
    observation_dim, action_dim = int(np.prod(data.observation_shape)), int(np.prod(data.action_shape))
    if policy.observation_keys != data.observation_keys:
        raise UserError(f"{where}: the observations are flattened from other keys ({policy.observation_keys} against "
                        f"{data.observation_keys}); give a dataset of the policy's task")
    if (policy.observation_dim, policy.action_dim) != (observation_dim, action_dim):
        raise UserError(f"{where}: observations and actions of sizes {policy.observation_dim} and {policy.action_dim} "
                        f"against {observation_dim} and {action_dim}; give a dataset of the policy's task")
    _check_observation_units(policy, data, where)
    if not (np.allclose(policy.action_low, data.action_low) and np.allclose(policy.action_high, data.action_high)):
        raise UserError(f"{where}: actions bounded by [{policy.action_low}, {policy.action_high}] against "
                        f"[{list(data.action_low)}, {list(data.action_high)}]: their units differ; convert the dataset "
                        "with the policy's bounds (make_dataset.action_bounds)")


def _check_observation_units(policy: PolicyMetadata, data: Any, where: str) -> None:
    """A policy trained on normalised observations carries its data's mean and std: a dataset whose observations
    sit, in the median dimension, more than _UNITS_APART of those std from that mean, or spread 10 times more or
    less, holds observations in other units or preprocessed otherwise (scaled, already normalised), which the
    policy would misread. Two datasets of one task lie well inside (their states overlap)."""
    if policy.observation_normalization is None or policy.dataset_checksum == data.content_checksum:
        return
    mean = np.asarray(policy.observation_normalization["mean"])
    std = np.asarray(policy.observation_normalization["std"]) + 1e-3  # as the preprocessing divides
    data_mean = np.asarray(data.statistics["observation_mean"])
    data_std = np.asarray(data.statistics["observation_std"]) + 1e-3
    shift = float(np.median(np.abs(data_mean - mean) / std))
    spread = float(np.exp(np.median(np.abs(np.log(data_std / std)))))
    if shift > _UNITS_APART or spread > _UNITS_APART:
        raise UserError(f"{where}: the dataset's observations are not in the units the policy was trained on (in the "
                        f"median dimension their mean lies {shift:.3g} of the policy's std from its data's, their "
                        f"spread differs {spread:.3g}-fold): give the data with the observation preprocessing of "
                        "the policy's own (raw observations, as the environment gives them)")


def successful_transitions(rewards: np.ndarray, dones: np.ndarray, success_return: Optional[float]
                           ) -> Optional[np.ndarray]:
    """Which transitions belong to a successful trajectory, one whose return is at least `success_return`; None
    for the threshold: a sparse success reward's (rewards 0 and 1 only: a trajectory that reached a reward of
    1), and no labels (None) for other rewards."""
    if success_return is None:
        if not np.isin(rewards, (0.0, 1.0)).all():
            return None
        success_return = 1.0
    return np.repeat(trajectory_returns(rewards, dones) >= success_return, trajectory_lengths(dones))


def load_initial_states(path: "str | pathlib.Path") -> np.ndarray:
    """An .npy file of initial states [K, observation size] (no pickles: a file from outside is never run)."""
    try:
        return np.load(pathlib.Path(path).expanduser(), allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable .npy array of initial states ({str(error).splitlines()[0]}); save "
                        "them with numpy.save(PATH, observations)") from error


def check_initial_observations(observations: Any, width: int) -> np.ndarray:
    """Given initial states as float32 [K, width], or a UserError saying what they must be."""
    array = np.asarray(observations, np.float32)
    if array.ndim == 1 and array.size == width:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != width or not len(array) or not np.isfinite(array).all():
        raise UserError(f"initial states of shape {list(np.shape(observations))}: give finite raw observations of "
                        f"shape [K, {width}], the states the policy starts from where deployed")
    return array


def initial_states(dones: np.ndarray, where: str) -> np.ndarray:
    """Indices of the first transition of every trajectory; a dataset of one trajectory has one, which is no
    estimate: a UserError."""
    starts = trajectory_starts(dones)
    if len(starts) < 2:
        raise UserError(f"{where}: one trajectory, so one initial state: FQE estimates a policy's value from the "
                        "initial states of many; give episode boundaries (timeouts, terminals or episode ids)")
    return starts


def bootstrap_mean(values: np.ndarray, samples: int, seed: int) -> "tuple[float, float, float]":
    """The mean of `values` and the 2.5 and 97.5 percentiles of the means of `samples` resamples (with
    replacement, from a generator seeded by `seed`)."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def _train(fitted: Any, settings: FQESettings, record: Dict[str, Any], workdir: "str | pathlib.Path | None") -> None:
    """`settings.num_steps` updates, logged; with `workdir`, resumed from and checkpointed to it."""
    import tensorflow as tf

    manager = writer = None
    if workdir is not None:
        workdir = pathlib.Path(workdir).expanduser()
        workdir.mkdir(parents=True, exist_ok=True)
        _check_record(workdir / RECORD_FILE, record)
        manager = tf.train.CheckpointManager(fitted.checkpoint(), str(workdir / "checkpoints"), max_to_keep=1)
        if manager.latest_checkpoint:
            manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            logging.info("FQE: resumed from %s at update %d", manager.latest_checkpoint, int(fitted.step))
        writer = tf.summary.create_file_writer(str(workdir))
    step = int(fitted.step)
    while step < settings.num_steps:
        boundary = min(settings.num_steps, (step // settings.log_interval + 1) * settings.log_interval)
        metrics = fitted.run_updates(min(settings.steps_per_call, boundary - step))
        step = int(fitted.step)
        if not np.isfinite(metrics["td_loss"]):
            raise UserError(f"FQE: non-finite td_loss ({metrics['td_loss']}) at update {step}: the estimate stopped "
                            "without saving; lower fqe.learning_rate, or check the dataset's rewards")
        if step % settings.log_interval == 0 or step == settings.num_steps:
            logging.info("FQE update %d/%d: td_loss %.4g, q_mean %.4g", step, settings.num_steps, metrics["td_loss"],
                         metrics["q_mean"])
            if writer is not None:
                with writer.as_default(step=step):
                    for name, value in metrics.items():
                        tf.summary.scalar(f"fqe/{name}", value)
        if manager is not None and (step % settings.checkpoint_interval == 0 or step == settings.num_steps):
            manager.save(checkpoint_number=step)
    if writer is not None:
        writer.flush()


def _check_record(path: pathlib.Path, record: Dict[str, Any]) -> None:
    """A working directory serves one estimate: the first call writes what it estimates; a later one must match."""
    if not path.is_file():
        files.write_json(path, record)
        return
    earlier = json_records.parse_json_object(path.read_text(), str(path), "give a new working directory")
    for key in ("policy", "dataset", "settings"):
        if earlier.get(key) != record[key]:
            raise UserError(f"{path.parent}: holds an FQE estimate of another {key} ({earlier.get(key)!r}, now "
                            f"{record[key]!r}); give a new working directory, or the {key} it was made with")
