"""Observations of several named parts (cameras and a state vector) end to end: from arrays and files, each part
stored once and read back held or streamed with frame stacks, exports with an input per part (SavedModel, TFLite,
ONNX), refusals, and a policy that needs both its image and its state to do what its data does not."""

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest
import tensorflow as tf

from iql_tf import IQL
from iql_tf.agent import IQLAgent
from iql_tf.data import from_arrays, from_pandas, from_tf_dataset, parts, shards, sources, transitions
from iql_tf.data.pipeline import make_dataset
from iql_tf.data.streaming import StreamedBatches
from iql_tf.errors import UserError
from iql_tf.policy import checks, loading
from iql_tf.policy.exported import export_policy
from iql_tf.policy.metadata import ONNX_FILE, TFLITE_FILE
from iql_tf.replay_buffer import ReplayBuffer
from iql_tf.settings import AgentSettings, DataSettings
from test_export import metadata
from test_images import SIZE, fql_stacks, image_preprocessing, readme_example, render

STEPS = 5  # per episode


def episode_rows(episodes: int, seed: int = 0) -> dict:
    """Episodes of STEPS steps back to back, observations of an image, a wrist image and a state; each row's next
    observation is the following frame of its episode; rewards number the rows (to find them once shuffled)."""
    rng = np.random.default_rng(seed)
    shapes = {"image": ((6, 6, 3), np.uint8), "wrist": ((4, 4, 1), np.uint8), "state": ((2,), np.float32)}
    observations = {name: [] for name in shapes}
    next_observations = {name: [] for name in shapes}
    for _ in range(episodes):
        for name, (shape, dtype) in shapes.items():
            frames = rng.integers(0, 256, (STEPS + 1, *shape)).astype(dtype)
            observations[name].append(frames[:-1])
            next_observations[name].append(frames[1:])
    count = episodes * STEPS
    timeouts = np.zeros(count)
    timeouts[STEPS - 1::STEPS] = 1
    return dict(observations={name: np.concatenate(values) for name, values in observations.items()},
                next_observations={name: np.concatenate(values) for name, values in next_observations.items()},
                actions=rng.uniform(-1, 1, (count, 2)), rewards=np.arange(count, dtype=np.float32),
                terminals=np.zeros(count), timeouts=timeouts)


def expected_stacks(rows: dict, k: int) -> "tuple[dict, dict]":
    """Each part's stacks as the FQL repository builds them (vectors: the row's own)."""
    dones = np.zeros(len(rows["rewards"]), bool)
    dones[STEPS - 1::STEPS] = True
    observations, next_observations = {}, {}
    for name, values in rows["observations"].items():
        if values.ndim == 4:
            observations[name], next_observations[name] = fql_stacks(values, rows["next_observations"][name], dones, k)
        else:
            observations[name], next_observations[name] = values, rows["next_observations"][name]
    return observations, next_observations


def test_parts_are_stored_once_each_and_read_back_held_and_streamed_with_their_images_stacked(tmp_path, monkeypatch):
    from iql_tf.data import conversion, inspection

    rows = episode_rows(episodes=9)
    count, k = len(rows["rewards"]), 2
    # Blocks of 4 rows cut trajectories of 5; shards of 12 rows are moved to the next trajectory's start.
    monkeypatch.setattr(shards, "IMAGE_BLOCK_BYTES", 4 * 300)
    conversion.convert(sources.resolve(from_arrays(**rows)), tmp_path / "converted", shard_size=12)
    fields = json.loads((tmp_path / "converted" / "metadata.json").read_text())
    assert fields["format_version"] == 8 and fields["observation_dtype"] == "parts"
    assert fields["observation_parts"] == [{"name": "image", "shape": [6, 6, 3], "dtype": "uint8"},
                                           {"name": "wrist", "shape": [4, 4, 1], "dtype": "uint8"},
                                           {"name": "state", "shape": [2], "dtype": "float32"}]
    # Each part once: the rows' own, and the next observations of trajectory and block ends.
    record = next(iter(tf.data.TFRecordDataset(str(tmp_path / "converted" / fields["shards"][0]["file"]))))
    stored = sorted(tf.train.Example.FromString(record.numpy()).features.feature)
    assert stored == sorted(["actions", "block", "dones", "end_frames/image", "end_frames/state", "end_frames/wrist",
                             "observations/image", "observations/state", "observations/wrist", "rewards", "shard",
                             "terminals"])
    expected = expected_stacks(rows, k)
    checked = inspection.validate(str(tmp_path / "converted"))  # what iql-validate DIR prints
    assert checked["problems"] == [] and checked["summary"]["observations/wrist images (height, width, channels)"] \
        == [4, 4, 1]

    held = make_dataset(DataSettings(source=str(tmp_path / "converted"), streaming=False, frame_stack=k))
    assert [shard.num_transitions for shard in held.metadata.shards] == [15, 15, 15]
    buffer = ReplayBuffer(held.tensors, batch_size=count, frame_stack=k)
    batch = buffer.transitions_at(tf.range(count, dtype=tf.int64))
    for key, want in zip(("observations", "next_observations"), expected):
        for name in want:
            np.testing.assert_array_equal(batch[key][name].numpy(), want[name], err_msg=f"{key}/{name}")

    streamed = make_dataset(DataSettings(source=str(tmp_path / "converted"), streaming=True, frame_stack=k))
    batches = StreamedBatches(streamed.directory, streamed.metadata, streamed.preprocessing, members=1,
                              batch_size=count, shuffle_buffer=count, seed=0, frame_stack=k)
    batches.available()
    batch = batches.sample([])
    order = np.argsort(batch["rewards"].numpy()[0])
    assert batch["observations"]["image"].dtype == tf.uint8 and batch["observations"]["state"].dtype == tf.float32
    for key, want in zip(("observations", "next_observations"), expected):
        for name in want:
            np.testing.assert_array_equal(batch[key][name].numpy()[0][order], want[name], err_msg=f"{key}/{name}")


def test_parts_from_npz_and_hdf5_files_a_tf_data_dataset_and_a_dataframe_are_the_arrays_transitions(tmp_path):
    rows = episode_rows(episodes=3)
    flat = {key: value for key, value in rows.items() if not parts.is_parts(value)}
    named = {f"{key}/{name}": part for key in ("observations", "next_observations") for name, part in rows[key].items()}
    np.savez(tmp_path / "rows.npz", **flat, **named)
    with h5py.File(tmp_path / "rows.hdf5", "w", track_order=True) as file:  # (else its groups list names sorted)
        for key, value in {**flat, **named}.items():
            file[key] = value
    expected = transitions.content_sha256(sources.read(sources.resolve(from_arrays(**rows)),
                                                       _report()).transitions)
    import pandas

    frame = pandas.DataFrame({**{name: list(values) for name, values in named.items()},
                              **{key: list(value) if value.ndim > 1 else value for key, value in flat.items()}})
    in_memory = {"tf.data": from_tf_dataset(tf.data.Dataset.from_tensor_slices(rows)), "pandas": from_pandas(frame)}
    for name in ("rows.npz", "rows.hdf5", "tf.data", "pandas"):
        source = in_memory.get(name) or str(tmp_path / name)
        data = sources.read(sources.resolve(source), _report())
        assert list(data.transitions["observations"]) == ["image", "wrist", "state"], name
        assert transitions.content_sha256(data.transitions) == expected, name


def _report():
    from iql_tf.data import validation

    return validation.Report()


def parts_agent(seeds=(0, 1)) -> IQLAgent:
    described = [parts.Part("image", (12, 12, 2), "uint8"), parts.Part("state", (3,), "float32")]
    return IQLAgent(0, 2, AgentSettings(hidden_dims=(8,), encoder="conv_small", jit_compile=False), 10, seeds=seeds,
                    parts=described)


def test_a_policy_of_parts_exports_an_input_per_part_to_savedmodel_tflite_and_onnx_alike(tmp_path):
    import onnxruntime

    agent = parts_agent()
    prep = image_preprocessing()
    directory = tmp_path / "policy"
    records = [{"name": "image", "shape": [12, 12, 1], "dtype": "uint8"}, {"name": "state", "shape": [3],
                                                                           "dtype": "float32"}]
    export_policy(agent.member_weights(1), "relu", prep, directory,
                  metadata(observation_dim=0, action_dim=2, action_low=[-2.0, 0.0], action_high=[2.0, 10.0],
                           observation_parts=records, frame_stack=2), encoder="conv_small")
    rng = np.random.default_rng(3)
    inputs = {"image": rng.integers(0, 256, (16, 12, 12, 2), dtype=np.uint8),
              "state": rng.normal(size=(16, 3)).astype(np.float32)}
    served = tf.saved_model.load(str(directory)).signatures["serving_default"]
    actions = served(**{name: tf.constant(value) for name, value in inputs.items()})["actions"].numpy()
    members = {name: np.stack([value, value]) for name, value in inputs.items()}
    np.testing.assert_allclose(actions, prep.actions_to_env(agent.act(members).numpy()[1], np.clip), rtol=1e-5,
                               atol=1e-5)
    moved = dict(inputs, state=inputs["state"] + 1.0)  # the state reaches the actions
    assert not np.allclose(served(**{name: tf.constant(value) for name, value in moved.items()})["actions"], actions)

    runner = tf.lite.Interpreter(model_path=str(directory / TFLITE_FILE)).get_signature_runner("serving_default")
    np.testing.assert_allclose(runner(**inputs)["actions"], actions, rtol=1e-5, atol=1e-5)
    session = onnxruntime.InferenceSession(str(directory / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert {spec.name: spec.type for spec in session.get_inputs()} == {"image": "tensor(uint8)",
                                                                       "state": "tensor(float)"}
    np.testing.assert_allclose(session.run(["actions"], inputs)[0], actions, rtol=1e-5, atol=1e-5)
    assert checks.served_ops(directory) <= checks.ALLOWED_OPS
    for path in (directory, directory / ONNX_FILE):  # as iql-evaluate and deployment code load them
        policy, _ = loading.load_policy(path)
        np.testing.assert_allclose(policy(inputs), actions, rtol=1e-5, atol=1e-5)
        with pytest.raises(UserError, match="observations: missing the part.s. state; the policy takes a dict of the "
                                            "parts image, state"):
            policy({"image": inputs["image"]})


class DotOffset(gym.Env):
    """One step: the image shows a dot, the state an offset from it to the target; the action is scored by its
    distance to the target (reward -|a - target|_1)."""

    observation_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (SIZE, SIZE, 1), np.uint8),
                                         "state": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)})
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        dot, self.offset = self.np_random.uniform(-0.6, 0.6, 2), self.np_random.uniform(-0.4, 0.4, 2)
        self.target = dot + self.offset
        return {"image": render(dot[None])[0], "state": self.offset.astype(np.float32)}, {}

    def step(self, action):
        reward = -float(np.abs(np.clip(action, -1, 1) - self.target).sum())
        return self.reset()[0], reward, True, False, {}


gym.register("iql_tf_test/DotOffset-v0", entry_point="test_parts:DotOffset", max_episode_steps=1)


def dot_and_offset(count: int, seed: int) -> dict:
    """One-step episodes: the image shows a dot, the state an offset from it to the target; the action is scored
    by its distance to the target. The data's actions are uniformly random."""
    rng = np.random.default_rng(seed)
    dots = rng.uniform(-0.6, 0.6, (count, 2))
    offsets = rng.uniform(-0.4, 0.4, (count, 2)).astype(np.float32)
    actions = rng.uniform(-1, 1, (count, 2)).astype(np.float32)
    targets = dots + offsets
    observations = {"image": render(dots), "state": offsets}
    return dict(observations=observations, next_observations=observations, actions=actions,
                rewards=-np.abs(actions - targets).sum(1), terminals=np.ones(count), timeouts=np.zeros(count),
                targets=targets, dots=dots)


def test_a_policy_reaches_the_target_its_image_and_its_state_only_tell_together(tmp_path):
    # The data's random actions score about -1.1. A policy blind to the state can at best act at the dot (-0.40
    # expected, the offsets' mean L1 size), one blind to the image at best at the offset (-0.60). IQL's policy from
    # both parts lands nearer the target (-0.29 measured after these updates), evaluated in the environment whose
    # observations are the same parts.
    rows = dot_and_offset(3000, seed=0)
    data = {key: value for key, value in rows.items() if key not in ("targets", "dots")}
    agent = IQL.from_config("locomotion", hidden_dims=(32,), batch_size=64, encoder="conv_small", expectile=0.7,
                            beta=10.0, reward_preprocessing="none", jit_compile=False, value_lr=1e-3, critic_lr=1e-3,
                            actor_lr=1e-3, eval_episodes=200, eval_interval=600, checkpoint_interval=600,
                            cache_dir=str(tmp_path / "cache"))
    agent.fit(from_arrays(**data, env_id="iql_tf_test/DotOffset-v0"), steps=600, workdir=str(tmp_path / "run"),
              progress=False)
    test = dot_and_offset(500, seed=1)
    actions = agent.predict(test["observations"])
    score = -np.abs(np.clip(actions, -1, 1) - test["targets"]).sum(1).mean()
    blind_to_state = -np.abs(test["targets"] - test["dots"]).sum(1).mean()
    blind_to_image = -np.abs(test["targets"] - test["observations"]["state"]).sum(1).mean()
    assert rows["rewards"].mean() < -1.0 and blind_to_image < blind_to_state < -0.35
    assert score > blind_to_state + 0.05, (score, blind_to_state)
    assert agent.results[0]["return_mean"] > blind_to_state + 0.05, agent.results
    one = {name: values[0] for name, values in test["observations"].items()}
    np.testing.assert_allclose(agent.predict(one), actions[0], rtol=1e-5, atol=1e-6)  # one, or a batch


def test_parts_refuse_what_they_cannot_be_in_one_line(tmp_path):
    rows = episode_rows(episodes=2)
    state = rows["observations"]["state"]

    def converted(**changes):
        return make_dataset(DataSettings(source=from_arrays(**dict(rows, **changes)), cache_dir=str(tmp_path)))

    with pytest.raises(UserError, match=r"field 'observations' is a dict of vectors \(state, more\); .* "
                                        r"np.concatenate"):
        converted(observations={"state": state, "more": state}, next_observations=None)
    with pytest.raises(UserError, match=r"field 'observations/wrist image' cannot name a model input; name each"):
        converted(observations={"image": rows["observations"]["image"], "wrist image": state}, next_observations=None)
    with pytest.raises(UserError, match=r"field 'observations/seed' cannot name a model input; .* other than "
                                        r"observations, actions, temperature, seed"):
        converted(observations={"image": rows["observations"]["image"], "seed": state}, next_observations=None)
    with pytest.raises(UserError, match=r"field 'next_observations' has the parts \['image', 'state'\], observations "
                                        r"\['image', 'wrist', 'state'\]"):
        converted(next_observations={name: rows["next_observations"][name] for name in ("image", "state")})
    with pytest.raises(UserError, match=r"field 'next_observations/state' has shape \[10, 3\], expected \[10, 2\]"):
        converted(next_observations=dict(rows["next_observations"], state=np.zeros((10, 3))))
    with pytest.raises(UserError, match=r"observations of parts \(image, wrist, state\), but environment Pendulum-v1 "
                                        r"gives observations without an image part"):
        make_dataset(DataSettings(source=from_arrays(**rows, env_id="Pendulum-v1"), cache_dir=str(tmp_path)))
    with pytest.raises(UserError, match=r"the observation part 'image' of shape \[6, 6, 3\] \(uint8\), but "
                                        r"environment iql_tf_test/DotOffset-v0 gives \[12, 12, 1\] \(uint8\)"):
        make_dataset(DataSettings(source=from_arrays(**rows, env_id="iql_tf_test/DotOffset-v0"),
                                  cache_dir=str(tmp_path)))
    with pytest.raises(UserError, match="observations are parts, which are taken as they are"):
        make_dataset(DataSettings(source=from_arrays(**rows), cache_dir=str(tmp_path), normalize_observations=True))
    dots = {key: value for key, value in dot_and_offset(20, seed=0).items() if key not in ("targets", "dots")}
    agent = IQL.from_config("locomotion", hidden_dims=(4,), batch_size=8, encoder="conv_small", jit_compile=False,
                            num_online_steps=10, actor_cosine_decay=False, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserError, match=r"observations of parts \(with images\), which online fine-tuning does not"):
        agent.fit(from_arrays(**dots, env_id="iql_tf_test/DotOffset-v0"), steps=2, workdir=str(tmp_path / "run"),
                  progress=False)


def test_predict_names_a_missing_or_unknown_part_and_a_part_of_the_wrong_shape(tmp_path, caplog):
    rows = dot_and_offset(40, seed=0)
    data = {key: value for key, value in rows.items() if key not in ("targets", "dots")}
    agent = IQL.from_config("locomotion", hidden_dims=(4,), batch_size=8, encoder="conv_small", jit_compile=False,
                            eval_episodes=0, validation_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level("INFO"):
        agent.fit(from_arrays(**data), steps=2, workdir=str(tmp_path / "run"), progress=False)
    assert "step 2, held-out data: critic_loss" in caplog.text  # ten held-out trajectories of parts, scored
    image, state = rows["observations"]["image"][:3], rows["observations"]["state"][:3]
    with pytest.raises(UserError, match="observations: missing the part.s. state; the policy takes the parts image, "
                                        "state"):
        agent.predict({"image": image})
    with pytest.raises(UserError, match="observations: unknown part.s. depth; the policy takes the parts"):
        agent.predict({"image": image, "state": state, "depth": image})
    with pytest.raises(UserError, match=r"observations\['state'\] of shape \[3, 3\]: expected \[N, 2\] or \[2\]"):
        agent.predict({"image": image, "state": np.zeros((3, 3))})
    with pytest.raises(UserError, match="its parts hold different numbers of observations"):
        agent.predict({"image": image, "state": state[:2]})
    with pytest.raises(UserError, match="observations: a ndarray, but the policy takes a dict of the parts"):
        agent.predict(image)
    assert agent.predict_value({"image": image, "state": state}, np.zeros((3, 2))).shape == (3,)
    with pytest.raises(UserError, match="the policy reads observations of parts, and fitted Q evaluation reads"):
        agent.estimate(from_arrays(**data))
    # Every part's weights are in the checkpoint: the run loaded back acts as trained, to the bit.
    np.testing.assert_array_equal(IQL.load(str(tmp_path / "run")).predict({"image": image, "state": state}),
                                  agent.predict({"image": image, "state": state}))


def test_every_image_part_of_a_batch_is_shifted_by_the_same_offsets_and_vectors_not_at_all():
    from iql_tf import augmentation

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2, 16, 8, 8, 3), dtype=np.uint8)  # [members, B, h, w, c]
    state = rng.normal(size=(2, 16, 4)).astype(np.float32)
    observations = {"image": tf.constant(image), "wrist": tf.constant(image[..., :1]), "state": tf.constant(state)}
    batch = {"observations": observations, "next_observations": dict(observations, image=tf.constant(image[::-1])),
             "rewards": tf.zeros([2, 16])}
    generators = [tf.random.Generator.from_seed(seed) for seed in (1, 2)]
    shifted = augmentation.shifted(batch, generators, probability=1.0)
    moved = shifted["observations"]["image"].numpy()
    assert not np.array_equal(moved, image)
    np.testing.assert_array_equal(shifted["observations"]["wrist"].numpy(), moved[..., :1])  # the same offsets
    np.testing.assert_array_equal(shifted["next_observations"]["wrist"].numpy(), moved[..., :1])  # and s' alike
    np.testing.assert_array_equal(shifted["observations"]["state"].numpy(), state)


def test_parts_from_a_minari_dataset_are_the_arrays_and_its_environment_stacks_images_alone(tmp_path, minari_root):
    import minari
    from minari.data_collector import EpisodeBuffer

    from iql_tf.envs import make_env, stack_frames

    rows = dot_and_offset(6, seed=2)
    data = {key: value for key, value in rows.items() if key not in ("targets", "dots")}
    episodes = [EpisodeBuffer(observations={name: np.concatenate([values[i:i + 1]] * 2)
                                            for name, values in rows["observations"].items()},
                              actions=rows["actions"][i:i + 1], rewards=rows["rewards"][i:i + 1],
                              terminations=np.ones(1, bool), truncations=np.zeros(1, bool)) for i in range(6)]
    minari.create_dataset_from_buffers("tests/dot-offset-v0", episodes, env=gym.make("iql_tf_test/DotOffset-v0"),
                                       algorithm_name="random", author="tests", author_email="n/a",
                                       code_permalink="tests/test_parts.py", description="observations of parts",
                                       eval_env="iql_tf_test/DotOffset-v0")
    by_minari = make_dataset(DataSettings(source="tests/dot-offset-v0", cache_dir=str(tmp_path / "a")))
    by_arrays = make_dataset(DataSettings(source=from_arrays(**data), cache_dir=str(tmp_path / "b")))
    assert by_minari.metadata.content_checksum == by_arrays.metadata.content_checksum
    assert by_minari.metadata.env_id == "iql_tf_test/DotOffset-v0" and by_minari.metadata.observation_keys is None
    assert [part.name for part in by_minari.metadata.parts] == ["image", "state"]

    env = stack_frames(make_env("iql_tf_test/DotOffset-v0"), 2)
    first, _ = env.reset(seed=0)
    second = env.step(np.zeros(2, np.float32))[0]
    assert first["image"].shape == (SIZE, SIZE, 2) and first["state"].shape == (2,)
    np.testing.assert_array_equal(first["image"][..., 0], first["image"][..., 1])  # the reset frame as padding
    np.testing.assert_array_equal(second["image"][..., 0], first["image"][..., 1])  # oldest first
    assert not np.array_equal(second["state"], first["state"])  # a vector: the newest alone


def test_a_run_of_parts_resumed_is_the_run_uninterrupted_every_encoder_included(tmp_path):
    # Every encoder's weights in the checkpoint, the target critics' too (no optimiser holds those): 2 + 2 updates
    # with a resume in between end where 4 updates do, to the bit.
    rows = dot_and_offset(64, seed=0)
    data = from_arrays(**{key: value for key, value in rows.items() if key not in ("targets", "dots")})

    def fit(steps, workdir):
        agent = IQL.from_config("locomotion", hidden_dims=(4,), batch_size=8, encoder="conv_small", jit_compile=False,
                                eval_episodes=0, checkpoint_interval=2, steps_per_call=1, actor_cosine_decay=False,
                                cache_dir=str(tmp_path / "cache"))
        return agent.fit(data, steps=steps, workdir=str(workdir), progress=False).run.agent

    fit(2, tmp_path / "resumed")
    resumed, whole = fit(4, tmp_path / "resumed"), fit(4, tmp_path / "whole")
    assert int(resumed.step) == 4
    for network in ("value", "critic", "target_critic", "actor"):  # (Keras' lists: every encoder's weights)
        pairs = list(zip(getattr(resumed, network).variables, getattr(whole, network).variables))
        assert any("conv0" in theirs.name for _, theirs in pairs)
        for mine, theirs in pairs:
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=f"{network} {theirs.name}")


def test_the_readme_cameras_example_runs_as_written(tmp_path, monkeypatch):
    namespace = readme_example("parts", tmp_path, monkeypatch)
    assert namespace["action"].shape == (7,) and np.all(np.abs(namespace["action"]) <= 1.0)
    first = {name: values[0] for name, values in namespace["observations"].items()}
    np.testing.assert_allclose(namespace["action"], namespace["agent"].predict(first), rtol=1e-5, atol=1e-6)


def test_a_checkpoint_without_the_encoders_weights_is_refused_for_resuming_and_still_loads(tmp_path, monkeypatch):
    # As image runs checkpointed before every encoder weight was an attribute: the target critics' encoder missing.
    from iql_tf import encoders
    from test_images import dot_rows

    rows = dot_rows(64)
    data = from_arrays(**rows)

    def fit(steps):
        agent = IQL.from_config("locomotion", hidden_dims=(4,), batch_size=8, encoder="conv_small", jit_compile=False,
                                eval_episodes=0, checkpoint_interval=2, actor_cosine_decay=False,
                                cache_dir=str(tmp_path / "cache"))
        return agent.fit(data, steps=steps, workdir=str(tmp_path / "run"), progress=False)

    with monkeypatch.context() as patched:
        patched.setattr(encoders, "setattr", lambda *args: None, raising=False)  # (the module's, not the builtin)
        old = fit(2)
    with pytest.raises(UserError, match=r"ckpt-2: lacks some of this run's weights .*cannot be resumed exactly"):
        fit(4)
    images = rows["observations"][:2]
    np.testing.assert_array_equal(IQL.load(str(tmp_path / "run")).predict(images), old.predict(images))
