"""Image observations end to end: stored as uint8 and read back to the bit (held or streamed), encoders, the
random-shift augmentation, members trained as their own runs, exports that take uint8 images (SavedModel,
TFLite, ONNX), refusals, and a policy that learns from pixels what its data does not do."""

import json
import pathlib

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from iql_tf import IQL, augmentation, encoders
from iql_tf.agent import IQLAgent
from iql_tf.data import checksums, from_arrays, from_pandas, rewards, shards, sources, streaming, validation
from iql_tf.data.pipeline import load_converted, make_dataset
from iql_tf.data.preprocessing import Preprocessing
from iql_tf.data.streaming import StreamedBatches
from iql_tf.errors import UserError
from iql_tf.policy import checks
from iql_tf.policy.exported import export_policy
from iql_tf.policy.metadata import ONNX_FILE, TFLITE_FILE
from iql_tf.replay_buffer import ReplayBuffer
from iql_tf.settings import AgentSettings, DataSettings
from test_export import metadata

SIZE = 12  # pixels: a CPU runs the test's convolutions in seconds


def render(targets: np.ndarray) -> np.ndarray:
    """A dot at each target of [-1, 1]^2 on a SIZE x SIZE image, a Gaussian blob so that sub-pixel positions show."""
    centres = (targets + 1) / 2 * (SIZE - 1)
    grid = np.arange(SIZE)
    rows = np.exp(-(grid[None] - centres[:, 1:2]) ** 2 / 2.0)
    columns = np.exp(-(grid[None] - centres[:, 0:1]) ** 2 / 2.0)
    return (255 * rows[:, :, None] * columns[:, None, :])[..., None].astype(np.uint8)


class DotTarget(gym.Env):
    """One step: the image shows a target, the action is scored by its distance to it (reward -|a - target|_1)."""

    observation_space = gym.spaces.Box(0, 255, (SIZE, SIZE, 1), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.target = self.np_random.uniform(-0.8, 0.8, 2)
        return render(self.target[None])[0], {}

    def step(self, action):
        reward = -float(np.abs(np.clip(action, -1, 1) - self.target).sum())
        return render(self.target[None])[0], reward, True, False, {}


gym.register("iql_tf_test/DotTarget-v0", entry_point="test_images:DotTarget", max_episode_steps=1)


def dot_rows(count: int, seed: int = 0) -> dict:
    """Uniformly random actions on random targets: one-step episodes, as DotTarget's."""
    rng = np.random.default_rng(seed)
    targets = rng.uniform(-0.8, 0.8, (count, 2))
    actions = rng.uniform(-1, 1, (count, 2)).astype(np.float32)
    images = render(targets)
    return dict(observations=images, actions=actions, rewards=-np.abs(actions - targets).sum(1),
                terminals=np.ones(count), timeouts=np.zeros(count), next_observations=images)


def frames(count: int, seed: int = 0, shape=(SIZE, SIZE, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def rewritten(dataset, folder: pathlib.Path, edit, **metadata_fields) -> pathlib.Path:
    """A copy of a converted dataset's directory in `folder`, each record's features changed by `edit(record,
    features)`, its shards' digests (and `metadata_fields`) updated in metadata.json."""
    folder.mkdir()
    for shard in dataset.metadata.shards:
        with tf.io.TFRecordWriter(str(folder / shard.file)) as writer:
            for record in tf.data.TFRecordDataset(str(pathlib.Path(dataset.directory, shard.file))):
                example = tf.train.Example.FromString(record.numpy())
                edit(record, example.features.feature)
                writer.write(example.SerializeToString())
    fields = json.loads(pathlib.Path(dataset.directory, "metadata.json").read_text())
    paths = [folder / shard.file for shard in dataset.metadata.shards]
    for shard, digest in zip(fields["shards"], checksums.files_sha256(paths)):
        shard["sha256"] = digest
    (folder / "metadata.json").write_text(json.dumps(dict(fields, **metadata_fields)))
    return folder


def test_images_are_stored_as_uint8_and_read_back_to_the_bit_held_or_streamed(tmp_path, monkeypatch):
    # Episodes of 7 steps back to back, next observations the following rows; small image blocks, so that
    # several records and their order are exercised.
    monkeypatch.setattr(shards, "IMAGE_BLOCK_BYTES", 50 * (2 * SIZE * SIZE * 3 + 16))
    images = frames(211)
    count = len(images) - 1
    actions = np.random.default_rng(1).uniform(-1, 1, (count, 2))
    timeouts = np.zeros(count)
    timeouts[6::7] = 1
    source = from_arrays(images[:-1], actions, np.arange(count), np.zeros(count), timeouts,
                         next_observations=images[1:])
    held = make_dataset(DataSettings(source=source, cache_dir=str(tmp_path), streaming=False))
    assert held.metadata.observation_dtype == "uint8" and held.metadata.observation_shape == [SIZE, SIZE, 3]
    assert held.tensors["observations"].dtype == tf.uint8
    np.testing.assert_array_equal(held.tensors["observations"].numpy(), images[:-1])
    # Held in memory, each frame once: the frames, and the next frames of the 30 trajectory ends (the blocks, of 49
    # rows, end where trajectories do).
    assert "next_observations" not in held.tensors and held.tensors[shards.END_FRAMES].shape[0] == 30
    np.testing.assert_array_equal(held_rows(held)["next_observations"], images[1:])
    assert held.metadata.num_episodes == -(-count // 7) and len(held.metadata.shards) == 1
    assert json.loads(pathlib.Path(held.directory, "metadata.json").read_text())["format_version"] == 7
    # uint8, not float32, and each frame once: the frames, the next frames of the 30 trajectory ends and of each
    # block's last row, three small columns (twice the frames, as format 6 stored them, would be 2.0).
    assert held.metadata.statistics["shards_bytes"] < 1.3 * images[:-1].size
    assert held.metadata.frames_once

    # A format 6 directory (each block's next frames stored whole, as iql-tf wrote images before) reads the same.
    def format6(record, features):
        del features[shards.END_FRAMES]
        features["next_observations"].bytes_list.value.append(
            tf.io.serialize_tensor(shards.parse_block(record, held.metadata)["next_observations"]).numpy())

    old = rewritten(held, tmp_path / "format6", format6, format_version=6)
    (old_tensors, old_metadata), (new_tensors, _) = load_converted(old), load_converted(held.directory)
    assert not old_metadata.frames_once and sorted(old_tensors) == sorted(new_tensors)
    for key, value in old_tensors.items():
        np.testing.assert_array_equal(value.numpy(), new_tensors[key].numpy(), err_msg=key)

    # A block whose end frames do not match its ends (another writer's, or a bug) is refused, not misindexed.
    def one_end_frame_short(record, features):
        ends = features[shards.END_FRAMES].bytes_list.value
        ends[0] = tf.io.serialize_tensor(tf.io.parse_tensor(ends[0], tf.uint8)[1:]).numpy()

    short = rewritten(held, tmp_path / "short", one_end_frame_short)
    with pytest.raises(UserError, match=r"field 'end_frames' has shape \[\d+, 12, 12, 3\] but metadata.json implies"):
        load_converted(short, next_frames=False)

    streamed = make_dataset(DataSettings(source=source, cache_dir=str(tmp_path), streaming=True))
    # Groups of image batches are bounded in bytes: here to 3 batches, fetched 3 at a time.
    monkeypatch.setattr(streaming, "IMAGE_GROUP_BYTES", 3 * (count // 2) * streaming.row_bytes(streamed.metadata, 1))
    batches = StreamedBatches(streamed.directory, streamed.metadata, streamed.preprocessing, members=1,
                              batch_size=count // 2, shuffle_buffer=count, seed=0)
    group = {key: [] for key in ("observations", "next_observations", "rewards")}
    assert batches.available() == 3
    while len(group["rewards"]) < 4:  # two epochs
        batches.available()
        batch = batches.sample([])
        for key in group:
            group[key].append(batch[key].numpy()[0])
    assert batch["observations"].dtype == tf.uint8
    order = np.argsort(np.concatenate(group["rewards"][:2]))  # one epoch: every row once
    np.testing.assert_array_equal(np.concatenate(group["observations"][:2])[order], images[:-1][:2 * (count // 2)])
    np.testing.assert_array_equal(np.concatenate(group["next_observations"][:2])[order], images[1:][:2 * (count // 2)])


def test_a_next_frame_that_is_not_the_following_rows_ends_the_trajectory():
    images = frames(10)
    next_images = images[1:].copy()
    next_images[3, 0, 0, 0] ^= 1  # one bit of one pixel: another frame
    source = from_arrays(images[:-1], np.zeros((9, 1)), np.zeros(9), np.zeros(9), np.zeros(9),
                         next_observations=next_images)
    dataset = make_dataset(DataSettings(source=source, streaming=False))
    assert dataset.metadata.num_episodes == 2
    np.testing.assert_array_equal(held_rows(dataset)["next_observations"], next_images)


def test_the_shift_repeats_the_border_as_padding_and_cropping_do():
    images = frames(5, shape=(7, 9, 2))
    offsets = np.array([[0, 0], [6, 6], [3, 3], [1, 5], [6, 2]], np.int32)
    shifted = augmentation.shift(tf.constant(images), tf.constant(offsets)).numpy()
    pad = augmentation.PADDING
    for image, (dy, dx), result in zip(images, offsets, shifted):
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")  # the FQL repository's crop
        np.testing.assert_array_equal(result, padded[dy:dy + 7, dx:dx + 9])


def test_a_batch_is_shifted_as_a_whole_with_one_shift_per_observation_and_its_next():
    images = frames(64)
    batch = {"observations": tf.constant(images[None]), "next_observations": tf.constant(images[None]),
             "rewards": tf.zeros([1, 64])}
    generator = tf.random.Generator.from_seed(0)
    untouched = augmentation.shifted(batch, [generator], 0.0)
    np.testing.assert_array_equal(untouched["observations"].numpy(), images[None])
    changed = []
    for _ in range(40):
        out = augmentation.shifted(batch, [generator], 0.5)
        np.testing.assert_array_equal(out["observations"].numpy(), out["next_observations"].numpy())  # same shift
        moved = np.any(out["observations"].numpy()[0] != images, axis=(1, 2, 3))
        changed.append(moved.mean())
    changed = np.asarray(changed)
    # A batch is augmented or not: then most of its 64 images move (1 in 49 shifts is none), or none does.
    assert set(np.round(changed[changed > 0], 1)) <= {0.9, 1.0} and 10 < np.count_nonzero(changed) < 30


def test_a_shared_encoder_is_read_by_every_network_and_trained_by_the_critics_alone():
    shape = (8, 8, 3)
    rng = np.random.default_rng(0)
    batch = {key: tf.constant(rng.integers(0, 256, (1, 16, *shape), dtype=np.uint8))
             for key in ("observations", "next_observations")}
    batch.update(actions=tf.constant(rng.uniform(-1, 1, (1, 16, 2)), tf.float32),
                 rewards=tf.constant(rng.normal(size=(1, 16)), tf.float32), masks=tf.ones([1, 16]))

    def moved_by_an_update(shared):
        """How far one update moves the value network's encoder and its first layer, the critics' step made
        tiny (learning rate 1e-12): what moves the encoder then is the value and policy losses."""
        agent = IQLAgent(192, 2, AgentSettings(hidden_dims=(8,), encoder="conv_small", shared_encoder=shared,
                                               critic_lr=1e-12, jit_compile=False), 10, image_shape=shape)
        encoder, layer = agent.value.encoder.trainable_variables[0], agent.value.trunk.layers[0].kernel
        before = encoder.numpy(), layer.numpy()
        agent.update(batch, tf.constant([[0, 0]]))
        return agent, [float(np.abs(now.numpy() - was).max()) for now, was in zip((encoder, layer), before)]

    shared, (encoder_moved, layer_moved) = moved_by_an_update(True)
    assert shared.value.encoder is shared.critic.encoder is shared.actor.encoder is not shared.target_critic.encoder
    assert encoder_moved < 1e-9 and layer_moved > 1e-5  # the value network trains, the critics' encoder does not
    _, (own_encoder_moved, _) = moved_by_an_update(False)
    assert own_encoder_moved > 1e-5  # its own encoder: the value loss trains it
    weights = shared.member_weights(0)  # what the export takes: the critics' encoder
    np.testing.assert_array_equal(weights["encoder/conv0/kernel"],
                                  shared.critic.encoder.member_arrays(0)["conv0/kernel"])


def test_impala_small_has_the_fql_repositorys_parameters_and_both_encoders_map_images_to_features():
    # The FQL repository's impala_small on 64x64 images of 3 stacked frames: 56,832 convolution parameters and
    # a 2048 -> 512 dense layer (seohongpark/fql utils/encoders.py, counted by hand from its layers).
    shapes = encoders.parameter_shapes("impala_small", (64, 64, 9))
    dense = np.prod(shapes["features/kernel"]) + np.prod(shapes["features/bias"])
    assert sum(np.prod(shape) for shape in shapes.values()) - dense == 56_832 and dense == 2048 * 512 + 512
    for kind, features in (("impala_small", 512), ("conv_small", 256)):
        encoder = encoders.ImageEncoder(kind, (SIZE, SIZE, 3), seeds=(0, 1), name="encoder")
        out = encoder(tf.constant(np.stack([frames(4), frames(4, seed=1)])))
        assert out.shape == (2, 4, features)
        alone = encoders.forward(kind, encoder.member_parameters(1), tf.constant(frames(4, seed=1)))
        np.testing.assert_allclose(out[1].numpy(), alone.numpy(), rtol=1e-5, atol=1e-6)


def image_transitions(count: int = 200, shape=(SIZE, SIZE, 3)) -> dict:
    images = frames(count + 1, shape=shape)
    rng = np.random.default_rng(2)
    return {"observations": images[:-1], "next_observations": images[1:], "actions": rng.uniform(-1, 1, (count, 2)),
            "rewards": rng.standard_normal(count), "terminals": (rng.uniform(size=count) < 0.1).astype(np.float32)}


def test_each_member_of_an_image_ensemble_trains_as_its_own_run_with_its_own_shifts():
    # As test_agent's ensemble test, with encoders and augmentation: after 6 updates member k of seeds (0, 1)
    # holds the weights of the run of seed k alone (rounding apart: the members' convolutions run one by one, their
    # dense layers batched), so each drew its own batches and shifts.
    buffer = ReplayBuffer(image_transitions(shape=(8, 8, 3)), 16)
    settings = AgentSettings(hidden_dims=(8,), batch_size=16, jit_compile=False, encoder="conv_small",
                             augmentation_probability=0.5, value_lr=3e-3, critic_lr=3e-3, actor_lr=3e-3)
    ensemble = IQLAgent(8 * 8 * 3, 2, settings, 10, seeds=(0, 1), image_shape=(8, 8, 3))
    ensemble.run_updates(buffer, 6)
    alone = IQLAgent(8 * 8 * 3, 2, settings, 10, seeds=(1,), image_shape=(8, 8, 3))
    alone.run_updates(buffer, 6)
    for name in ("value", "actor", "critic", "target_critic"):
        for a, b in zip(getattr(alone, name).get_weights(), getattr(ensemble, name).get_weights()):
            np.testing.assert_allclose(a.reshape(-1), b[1].reshape(-1), rtol=1e-4, atol=1e-5, err_msg=name)
    encoder = ensemble.actor.encoder.parameters_by_name["conv0/kernel"].numpy()
    assert not np.allclose(encoder[0], encoder[1])


def image_preprocessing() -> Preprocessing:
    return Preprocessing.from_statistics(np.zeros(0), np.zeros(0), np.array([-2.0, 0.0]), np.array([2.0, 10.0]),
                                         rewards.RewardTransform("none"), False)


@pytest.mark.parametrize("kind", ["impala_small", "conv_small"])
def test_an_image_policy_exports_uint8_inputs_to_savedmodel_tflite_and_onnx_alike(tmp_path, kind):
    import onnxruntime

    agent = IQLAgent(SIZE * SIZE * 3, 2, AgentSettings(hidden_dims=(8,), encoder=kind, jit_compile=False), 10,
                     seeds=(0, 1), image_shape=(SIZE, SIZE, 3))
    prep = image_preprocessing()
    directory = tmp_path / "policy"
    export_policy(agent.member_weights(1), "relu", prep, directory,
                  metadata(observation_dim=SIZE * SIZE * 3, action_dim=2, action_low=[-2.0, 0.0],
                           action_high=[2.0, 10.0], image_shape=[SIZE, SIZE, 3]), encoder=kind)
    images = frames(32, seed=3)
    served = tf.saved_model.load(str(directory)).signatures["serving_default"]
    actions = served(observations=tf.constant(images))["actions"].numpy()
    unit = agent.act(np.stack([images, images])).numpy()[1]
    np.testing.assert_allclose(actions, prep.actions_to_env(unit, np.clip), rtol=1e-5, atol=1e-5)
    assert not np.allclose(actions, prep.actions_to_env(agent.act(np.stack([images, images])).numpy()[0], np.clip))

    interpreter = tf.lite.Interpreter(model_path=str(directory / TFLITE_FILE))
    runner = interpreter.get_signature_runner("serving_default")
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    np.testing.assert_allclose(runner(observations=images)["actions"], actions, rtol=1e-5, atol=1e-5)
    session = onnxruntime.InferenceSession(str(directory / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    np.testing.assert_allclose(session.run(["actions"], {"observations": images})[0], actions, rtol=1e-5, atol=1e-5)
    served_ops = checks.served_ops(directory)
    assert {"Conv2D", "Cast"} <= served_ops <= checks.ALLOWED_OPS, sorted(served_ops - checks.ALLOWED_OPS)


def test_a_policy_learns_from_pixels_what_its_random_data_does_not_do(tmp_path):
    # DotTarget scores an action by its distance to the target the image shows. The data's actions are uniformly
    # random (mean return about -1.2); a policy that ignores the image scores -0.8 at best (the zero action);
    # IQL's policy from the pixels alone lands near the target (-0.27 measured after these 500 updates).
    rows = dot_rows(3000)
    source = from_arrays(**rows, env_id="iql_tf_test/DotTarget-v0")
    agent = IQL.from_config("locomotion", hidden_dims=(32,), batch_size=64, encoder="conv_small", expectile=0.7,
                            beta=10.0, reward_preprocessing="none", jit_compile=False, value_lr=1e-3, critic_lr=1e-3,
                            actor_lr=1e-3, eval_episodes=100, eval_interval=500, checkpoint_interval=500,
                            cache_dir=str(tmp_path / "cache"))
    agent.fit(source, steps=500, workdir=str(tmp_path / "run"), progress=False)
    assert rows["rewards"].mean() < -1.0
    assert agent.results[0]["return_mean"] > -0.5
    images = rows["observations"][:4]
    np.testing.assert_allclose(agent.predict(images[1]), agent.predict(images)[1], rtol=1e-6)  # one, or a batch
    with pytest.raises(UserError, match=r"observations of shape \[4, 12, 12, 1\] and dtype float32: expected uint8"):
        agent.predict(images.astype(np.float32))


def test_image_data_refuses_what_images_cannot_do_in_one_line(tmp_path):
    rows = dot_rows(50)
    source = from_arrays(**rows)
    with pytest.raises(UserError, match="images, which the networks scale by 1/255 themselves; bind it to False"):
        make_dataset(DataSettings(source=source, cache_dir=str(tmp_path), normalize_observations=True))
    with pytest.raises(UserError, match=r"observations that are images of shape \[12, 12, 1\], but environment "
                                        r"Pendulum-v1 gives vectors"):
        make_dataset(DataSettings(source=from_arrays(**rows, env_id="Pendulum-v1"), cache_dir=str(tmp_path)))
    agent = IQL.from_config("locomotion", hidden_dims=(4,), batch_size=8, encoder="conv_small", jit_compile=False,
                            num_online_steps=10, actor_cosine_decay=False, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserError, match="image observations, which online fine-tuning does not take yet"):
        agent.fit(from_arrays(**rows, env_id="iql_tf_test/DotTarget-v0"), steps=2, workdir=str(tmp_path / "run"),
                  progress=False)
    with pytest.raises(UserError, match=r"IQLAgent.encoder"):
        AgentSettings(encoder="resnet50")
    with pytest.raises(UserError, match=r"frame_stack = 2 is longer than its longest trajectory \(1 step\)"):
        make_dataset(DataSettings(source=source, cache_dir=str(tmp_path), frame_stack=2))  # one-step episodes

    def read(**arrays):
        report = validation.Report()
        sources.read(sources.resolve(from_arrays(**dict(rows, **arrays))), report)
        report.raise_first("arrays")

    images = rows["observations"]
    with pytest.raises(UserError, match=r"holds frames \[N, h, w, c\] of dtype float32; image observations are uint8 "
                                        r"pixels 0-255.*look like 0-1: \(frames \* 255\).round\(\).astype"):
        read(observations=images / 255.0)
    with pytest.raises(UserError, match=r"convert them \(0-255: frames.astype\(np.uint8\)\)"):
        read(observations=images.astype(np.float32))
    with pytest.raises(UserError, match=r"holds frames of shape \[1, 12, 12\], channels first.*np.moveaxis"):
        read(observations=np.moveaxis(images, -1, 1))
    import pandas as pd

    frame = pd.DataFrame({"observations": list(images[:-1]) + [images[-1, :6]], "actions": list(rows["actions"]),
                          "rewards": rows["rewards"], "terminals": rows["terminals"], "timeouts": rows["timeouts"]})
    with pytest.raises(UserError, match=r"holds images of different shapes"):
        from_pandas(frame)


class Counter(gym.Env):
    """Episodes of 5 steps whose frame t is filled with 10 * t + the episode's first digit (so frames differ)."""

    observation_space = gym.spaces.Box(0, 255, (4, 4, 2), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def frame(self):
        return np.full((4, 4, 2), 10 * self.t + self.first, np.uint8)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.first = 0, int(self.np_random.integers(0, 10))
        return self.frame(), {}

    def step(self, action):
        self.t += 1
        return self.frame(), float(action[0]), False, self.t == 5, {}


gym.register("iql_tf_test/Counter-v0", entry_point="test_images:Counter")


def counter_rows(episodes: int, seed: int = 0) -> dict:
    """Episodes of Counter with uniformly random actions, as D4RL-style rows (next observations included)."""
    env, rng = Counter(), np.random.default_rng(seed)
    rows = {key: [] for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed * 1000 + episode)
        done = False
        while not done:
            action = rng.uniform(-1, 1, 1).astype(np.float32)
            next_observation, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            for key, value in zip(rows, (observation, action, reward, terminated, truncated, next_observation)):
                rows[key].append(value)
            observation = next_observation
    return {key: np.asarray(values) for key, values in rows.items()}


def fql_stacks(observations, next_observations, dones, k):
    """The FQL repository's frame stacks (utils/datasets.py, Dataset.sample), of every row: trajectory starts
    from the rows after each end, each frame index clamped to its trajectory's first."""
    idxs = np.arange(len(dones))
    initial_locs = np.concatenate([[0], np.flatnonzero(dones)[:-1] + 1])
    initial_state_idxs = initial_locs[np.searchsorted(initial_locs, idxs, side="right") - 1]
    obs, next_obs = [], []
    for i in reversed(range(k)):
        cur_idxs = np.maximum(idxs - i, initial_state_idxs)
        obs.append(observations[cur_idxs])
        if i != k - 1:
            next_obs.append(observations[cur_idxs])
    next_obs.append(next_observations[idxs])
    return np.concatenate(obs, axis=-1), np.concatenate(next_obs, axis=-1)


def test_frame_stacks_are_the_fql_repositorys_held_streamed_and_in_the_environment(tmp_path, monkeypatch):
    from iql_tf.data import conversion, sources
    from iql_tf.envs import make_env, stack_frames

    rows = counter_rows(episodes=9)
    rows["rewards"] = np.arange(len(rows["rewards"]), dtype=np.float32)  # identifies each row once shuffled
    count, k = len(rows["rewards"]), 3
    # Blocks of 4 rows cut trajectories of 5; shards of 12 rows are moved to the next trajectory's start.
    monkeypatch.setattr(shards, "IMAGE_BLOCK_BYTES", 4 * (2 * 32 + 16))
    conversion.convert(sources.resolve(from_arrays(**rows)), tmp_path / "converted", shard_size=12)
    dones = np.zeros(count, bool)
    dones[4::5] = True
    expected = fql_stacks(rows["observations"], rows["next_observations"], dones, k)

    held = make_dataset(DataSettings(source=str(tmp_path / "converted"), streaming=False, frame_stack=k))
    assert [shard.num_transitions for shard in held.metadata.shards] == [15, 15, 15]
    buffer = ReplayBuffer(held.tensors, batch_size=count, frame_stack=k)
    stacks = [tf.concat(part, 0).numpy() for part in tf.nest.map_structure(
        lambda *p: list(p), *[frame_stacks_of(buffer, rows_) for rows_ in np.array_split(np.arange(count), 3)])]
    np.testing.assert_array_equal(stacks[0], expected[0])
    np.testing.assert_array_equal(stacks[1], expected[1])

    streamed = make_dataset(DataSettings(source=str(tmp_path / "converted"), streaming=True, frame_stack=k))
    batches = StreamedBatches(streamed.directory, streamed.metadata, streamed.preprocessing, members=1,
                              batch_size=count, shuffle_buffer=count, seed=0, frame_stack=k)
    batches.available()
    batch = {key: value.numpy()[0] for key, value in batches.sample([]).items()}
    order = np.argsort(batch["rewards"])
    np.testing.assert_array_equal(batch["observations"][order], expected[0])
    np.testing.assert_array_equal(batch["next_observations"][order], expected[1])

    env = stack_frames(make_env("iql_tf_test/Counter-v0"), k)
    observation, _ = env.reset(seed=0)  # episode 0 of counter_rows(seed=0)
    seen = [observation]
    for _ in range(4):
        seen.append(env.step(np.zeros(1, np.float32))[0])
    np.testing.assert_array_equal(np.stack(seen), expected[0][:5])


def held_rows(dataset) -> dict:
    """Every row of a dataset held in memory as the replay buffer gives it (next frames rebuilt), as arrays."""
    buffer = ReplayBuffer(dataset.tensors, batch_size=1)
    rows = tf.range(dataset.metadata.num_transitions, dtype=tf.int64)
    return {key: value.numpy() for key, value in buffer.transitions_at(rows).items()}


def frame_stacks_of(buffer, rows):
    batch = buffer.transitions_at(tf.constant(rows, tf.int64))
    return batch["observations"], batch["next_observations"]


def test_a_frame_stacked_run_trains_exports_and_evaluates_on_stacks_and_vectors_refuse_stacks(tmp_path):
    rows = counter_rows(episodes=20)
    agent = IQL.from_config("locomotion", hidden_dims=(4,), batch_size=8, encoder="conv_small", jit_compile=False,
                            frame_stack=2, augmentation_probability=1.0, eval_episodes=3, eval_interval=10,
                            checkpoint_interval=10, validation_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    agent.fit(from_arrays(**rows, env_id="iql_tf_test/Counter-v0"), steps=10, workdir=str(tmp_path / "run"),
              progress=False)
    assert "return_mean" in agent.results[0]
    from iql_tf.evaluation import evaluate_export
    from iql_tf.policy.metadata import read_policy_metadata

    export = tmp_path / "run" / "export" / "policy"
    metadata_ = read_policy_metadata(export)
    assert (metadata_.image_shape, metadata_.frame_stack, metadata_.input_shape) == ([4, 4, 2], 2, [4, 4, 4])
    assert -5 <= evaluate_export(str(export), episodes=2)["return_mean"] <= 5  # on stacks of the env's frames
    assert json.loads((export / "assets" / "metadata.json").read_text())["format_version"] == 3
    with pytest.raises(UserError, match="frame_stack"):  # the networks' inputs would change: refused, not crashed
        agent.fit(from_arrays(**rows, env_id="iql_tf_test/Counter-v0"), steps=20, workdir=str(tmp_path / "run"),
                  progress=False, frame_stack=3)
    with pytest.raises(UserError, match="the policy reads images, and fitted Q evaluation reads vector observations"):
        agent.estimate(from_arrays(**rows, env_id="iql_tf_test/Counter-v0"))
    with pytest.raises(UserError, match=r"frame_stack = 2, but its observations are vectors; frames are stacked for "
                                        "image observations only"):
        make_dataset(DataSettings(source=from_arrays(np.zeros((5, 3)), np.zeros((5, 1)), np.zeros(5), np.zeros(5),
                                                     np.zeros(5)), cache_dir=str(tmp_path), frame_stack=2,
                                  validation_fraction=0.0))  # (the run's gin bindings are still in effect)


def test_images_from_an_npz_file_and_a_minari_dataset_are_the_arrays_transitions(tmp_path, minari_root):
    import minari
    from minari.data_collector import EpisodeBuffer

    rows = counter_rows(episodes=3)
    np.savez(tmp_path / "counter.npz", **rows)
    by_arrays = make_dataset(DataSettings(source=from_arrays(**rows), cache_dir=str(tmp_path / "a")))
    by_file = make_dataset(DataSettings(source=str(tmp_path / "counter.npz"), cache_dir=str(tmp_path / "b")))
    assert by_file.metadata.content_checksum == by_arrays.metadata.content_checksum
    assert by_file.metadata.observation_dtype == "uint8"
    from iql_tf.data import inspection

    summary = inspection.validate(str(tmp_path / "counter.npz"))["summary"]  # what iql-validate prints
    assert summary["observation images (height, width, channels)"] == [4, 4, 2]
    assert summary["pixel min / max"] == [int(rows["observations"].min()), int(rows["observations"].max())]
    import pandas

    frame = pandas.DataFrame({key: list(value) if value.ndim > 1 else value for key, value in rows.items()})
    by_frame = make_dataset(DataSettings(source=from_pandas(frame), cache_dir=str(tmp_path / "d")))
    assert by_frame.metadata.content_checksum == by_arrays.metadata.content_checksum  # a column of images

    episodes = [EpisodeBuffer(observations=np.concatenate([rows["observations"][5 * e:5 * e + 5],
                                                           rows["next_observations"][5 * e + 4:5 * e + 5]]),
                              actions=rows["actions"][5 * e:5 * e + 5], rewards=rows["rewards"][5 * e:5 * e + 5],
                              terminations=rows["terminals"][5 * e:5 * e + 5],
                              truncations=rows["timeouts"][5 * e:5 * e + 5]) for e in range(3)]
    minari.create_dataset_from_buffers("tests/counter-v0", episodes, env=gym.make("iql_tf_test/Counter-v0"),
                                       algorithm_name="random", author="tests", author_email="n/a",
                                       code_permalink="tests/test_images.py", description="image observations",
                                       eval_env="iql_tf_test/Counter-v0")
    by_minari = make_dataset(DataSettings(source="tests/counter-v0", cache_dir=str(tmp_path / "c")))
    assert by_minari.metadata.content_checksum == by_arrays.metadata.content_checksum
    assert (by_minari.metadata.env_id, by_minari.metadata.observation_shape) == ("iql_tf_test/Counter-v0", [4, 4, 2])


def readme_example(marker: str, folder: pathlib.Path, monkeypatch) -> dict:
    """The names the README's Python block between `<!-- MARKER:begin -->` and `<!-- MARKER:end -->` defines, run
    as written in `folder`."""
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split(f"<!-- {marker}:begin -->")[1].split(f"<!-- {marker}:end -->")[0]
    monkeypatch.chdir(folder)
    namespace = {}
    exec(re.search(r"```python\n(.*?)```", section, re.S).group(1), namespace)
    return namespace


def test_the_readme_camera_example_runs_as_written(tmp_path, monkeypatch):
    namespace = readme_example("camera", tmp_path, monkeypatch)
    assert namespace["action"].shape == (2,) and np.all(np.abs(namespace["action"]) <= 1.0)
    np.testing.assert_allclose(namespace["action"], namespace["agent"].predict(namespace["stack"][0]), rtol=1e-5,
                               atol=1e-6)


def test_the_camera_sees_the_maze_and_the_generated_camera_data_is_the_state_data_seen_through_it(pointmaze_root,
                                                                                                  monkeypatch):
    import minari

    from iql_tf import maze_camera
    from iql_tf.envs import make_env
    from iql_tf.generation import generators

    env = make_env(maze_camera.ENV_ID, {"image_size": 20, "continuing_task": True})  # 4 pixels a cell
    frame, _ = env.reset(seed=0)
    assert frame.shape == (20, 20, 3) and frame.dtype == np.uint8
    assert frame[0, 0, 0] == 255 and frame[10, 6, 0] == 255 and frame[6, 6, 0] == 0  # walls: border, cell (2, 1)
    maze = env.unwrapped  # the ball and goal positions the frame shows
    for channel, position in ((1, maze.point_env.data.qpos[:2]), (2, maze.goal)):
        row, column = np.unravel_index(np.argmax(frame[..., channel]), (20, 20))
        np.testing.assert_allclose([(column + 0.5) / 4 - 2.5, 2.5 - (row + 0.5) / 4], position, atol=0.25)

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pointmaze_root))
    generators.generate_pointmaze_camera("tests/umaze-camera-v0", image_size=20, state_id="pointmaze/umaze-example-v0")
    camera, states = minari.load_dataset("tests/umaze-camera-v0"), minari.load_dataset("pointmaze/umaze-example-v0")
    for seen, episode in zip(camera.iterate_episodes(), states.iterate_episodes()):
        np.testing.assert_array_equal(seen.observations, env.get_wrapper_attr("camera").frames(
            episode.observations["achieved_goal"], episode.observations["desired_goal"]))
        np.testing.assert_array_equal(seen.actions, episode.actions)
        np.testing.assert_array_equal(seen.truncations, episode.truncations)
    dataset = make_dataset(DataSettings(source="tests/umaze-camera-v0", streaming=False))
    assert (dataset.metadata.env_id, dataset.metadata.observation_shape) == (maze_camera.ENV_ID, [20, 20, 3])
    assert dataset.metadata.env_kwargs["maze_map"][1][1] == "g" and dataset.metadata.env_kwargs["image_size"] == 20
