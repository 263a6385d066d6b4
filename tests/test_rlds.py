"""RLDS / TFDS episode datasets as sources: TFDS's own D4RL layout reads as the same rows in a .npz, to the bit,
and trains to the same weights; a robot-style layout (dict observations, a language instruction, the reward on
the last step) trains; data written as RLDS opens with TFDS alone; the mistakes are one line each. Every dataset
is written here with TFDS's own writer."""

import os
import pathlib
import shutil
import subprocess
import sys

import gin
import h5py
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import iql_tf
from iql_tf import config, generate
from iql_tf.data import rlds_writer, transitions
from iql_tf.data.pipeline import make_dataset
from iql_tf.errors import UserError
from iql_tf.policy.metadata import read_policy_metadata
from iql_tf.settings import AgentSettings, DataSettings, RunSettings
from iql_tf.trainer import run_training, train

from datasets import read_source

STATE, ACTION = 8, 7


def d4rl_rows(hopper_rows):
    """Hopper rows with every third episode ending in a time limit instead of a fall (both kinds of end)."""
    rows = {key: np.array(value) for key, value in hopper_rows.items()}
    ends = np.flatnonzero(rows["terminals"])
    rows["terminals"][ends[::3]], rows["timeouts"][ends[::3]] = False, True
    return rows


def write_tfds_d4rl(rows, folder, tmp_path, next_observations):
    """The rows as TFDS's d4rl_mujoco_hopper builder makes them: its own generate_examples on a D4RL-layout
    hdf5 file (with the infos D4RL stores), written with the builder's features."""
    from tensorflow_datasets.d4rl import dataset_utils

    path = tmp_path / f"hopper-{next_observations}.hdf5"
    with h5py.File(path, "w") as file:
        for key in ("observations", "actions", "rewards", "terminals", "timeouts") + (
                ("next_observations",) if next_observations else ()):
            file[key] = rows[key]
        file["infos/qpos"] = np.zeros((len(rows["rewards"]), 6))
        file["infos/qvel"] = np.ones((len(rows["rewards"]), 6))
        file["infos/action_log_probs"] = np.zeros(len(rows["rewards"]))
    features = tfds.builder("d4rl_mujoco_hopper/v2-random").info.features
    episodes = (episode for _, episode in dataset_utils.generate_examples(str(path)))
    return rlds_writer.write_episodes(folder, "d4rl_mujoco_hopper", features, episodes)


def test_tfds_d4rl_layout_reads_and_trains_as_the_same_rows_in_an_npz(hopper_rows, tmp_path):
    rows = d4rl_rows(hopper_rows)
    npz = tmp_path / "hopper.npz"
    np.savez(npz, **{key: value for key, value in rows.items() if key != "next_observations"})
    expected = read_source(str(npz))
    for with_next in (False, True):
        folder = write_tfds_d4rl(rows, tmp_path / f"rlds-{with_next}", tmp_path, with_next)
        data = read_source(f"rlds:{folder}")
        # With next observations in the file TFDS appends a final step to every episode, holding the file's last
        # next observation: its transition is dropped for a time limit, as a row without s' is.
        for key in transitions.TRANSITION_KEYS:
            np.testing.assert_array_equal(data.transitions[key], expected.transitions[key], err_msg=key)
        assert data.num_episodes == expected.num_episodes
        assert (data.ref_min_score, data.ref_max_score) == (-20.272305, 3234.3)  # D4RL's hopper scores
    assert expected.transitions["terminals"].sum() > 10 and (1 - expected.transitions["terminals"])[
        expected.transitions["dones"] == 1].sum() > 10  # falls and time limits both
    # The same training run, bit for bit.
    weights = []
    for source in (str(npz), f"rlds:{folder}"):
        run = train(tmp_path / "runs" / str(len(weights)), DataSettings(source, cache_dir=str(tmp_path / "cache")),
                    AgentSettings(hidden_dims=(16,), batch_size=32, jit_compile=False),
                    RunSettings(num_offline_steps=50, steps_per_call=25, progress_bar=False, eval_episodes=0))
        weights.append([w.numpy() for w in run.trained().agent.actor.weights])
    for first, second in zip(*weights):
        np.testing.assert_array_equal(first, second)


def robot_features():
    return tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset({
            "observation": tfds.features.FeaturesDict({
                "state": tfds.features.Tensor(shape=(STATE,), dtype=np.float32),
                "gripper": tfds.features.Tensor(shape=(1,), dtype=np.float32)}),
            "action": tfds.features.Tensor(shape=(ACTION,), dtype=np.float32),
            "reward": np.float32, "discount": np.float32,
            "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_,
            "language_instruction": tfds.features.Text()}),
        "episode_metadata": tfds.features.FeaturesDict({"file_path": tfds.features.Text()})})


def robot_episodes(count=30, seed=0):
    """Reach a target: the state's first 7 entries move by the action; the episode's last step (a real action,
    is_terminal) earns 1 when the state ends near 0, as robot datasets label success."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        steps = int(rng.integers(8, 15))
        state = np.zeros((steps, STATE), np.float32)
        state[0, :ACTION] = rng.uniform(-1, 1, ACTION)
        good = index % 2 == 0
        actions = np.zeros((steps, ACTION), np.float32)
        for t in range(steps):
            actions[t] = np.clip((-0.5 if good else 0.1) * state[t, :ACTION] + rng.normal(0, 0.05, ACTION), -1, 1)
            if t + 1 < steps:
                state[t + 1, :ACTION] = state[t, :ACTION] + actions[t]
        reward = np.zeros(steps, np.float32)
        reward[-1] = float(good)
        flags = np.zeros(steps, bool)
        yield {"steps": {"observation": {"state": state, "gripper": np.zeros((steps, 1), np.float32)},
                         "action": actions, "reward": reward, "discount": np.ones(steps, np.float32),
                         "is_first": np.concatenate([[True], flags[1:]]), "is_last": np.concatenate([flags[:-1], [True]]),
                         "is_terminal": np.concatenate([flags[:-1], [True]]),
                         "language_instruction": ["reach the target"] * steps},
               "episode_metadata": {"file_path": f"episode_{index}.npz"}}


@pytest.fixture(scope="module")
def robot_rlds(tmp_path_factory):
    return rlds_writer.write_episodes(tmp_path_factory.mktemp("robot") / "robot", "robot_reach", robot_features(),
                                      robot_episodes())


def test_a_robot_layout_keeps_the_reward_of_the_last_step_and_trains(robot_rlds, tmp_path):
    source = f"rlds:{robot_rlds}"
    # RLDS's convention drops the last step's action and reward; robot data keeps them with 'transition'.
    dropped = make_dataset(DataSettings(source, cache_dir=str(tmp_path)))
    assert float(dropped.tensors["rewards"].numpy().sum()) == 0.0
    kept = make_dataset(DataSettings(source, cache_dir=str(tmp_path), rlds_final_step="transition",
                                     observation_keys=["state", "gripper"]))
    assert kept.metadata.observation_keys == ["state", "gripper"] and kept.metadata.observation_shape == [STATE + 1]
    assert float(kept.tensors["rewards"].numpy().sum()) == 15.0  # the 15 successes
    assert kept.tensors["terminals"].numpy().sum() == 30 and kept.metadata.num_episodes == 30
    agent = iql_tf.IQL.from_config("locomotion", hidden_dims=(16, 16), batch_size=32, progress_bar=False,
                                   jit_compile=False, rlds_final_step="transition", cache_dir=str(tmp_path))
    agent.fit(source, steps=30, workdir=str(tmp_path / "run"))
    assert agent.predict(np.zeros(STATE + 1, np.float32)).shape == (ACTION,)
    # The command line's way: the README's gin bindings, parsed as iql-train parses them.
    gin.clear_config()
    config.parse_gin(["locomotion"], [f"make_dataset.source = '{source}'", "make_dataset.observation_keys = ['state']",
                                      "make_dataset.rlds_final_step = 'transition'",
                                      f"make_dataset.cache_dir = '{tmp_path}'", "IQLAgent.hidden_dims = (8,)",
                                      "IQLAgent.jit_compile = False", "train.num_offline_steps = 20",
                                      "train.progress_bar = False"])
    run_training(str(tmp_path / "cli"))
    metadata = read_policy_metadata(tmp_path / "cli" / "export" / "policy")
    assert (metadata.observation_keys, metadata.observation_dim, metadata.action_dim) == (["state"], STATE, ACTION)
    with pytest.raises(UserError, match=r"its observation has no part 'stat'; did you mean 'state'\? its numeric "
                                        r"parts are gripper, state"):
        make_dataset(DataSettings(source, cache_dir=str(tmp_path), observation_keys=["stat"]))


def test_a_dataset_streamed_as_it_is_gives_its_conversion_s_rows_and_resumes(robot_rlds, tmp_path):
    import tensorflow as tf

    from iql_tf.data import rlds_source
    from iql_tf.data.pipeline import load_converted
    from iql_tf.data.streaming import GROUP, StreamedBatches

    source, options = f"rlds:{robot_rlds}", dict(cache_dir=str(tmp_path), rlds_final_step="transition")
    held = make_dataset(DataSettings(source, streaming=False, **options))
    # (automatically only a dataset larger than the memory budget; this one is small)
    streamed = make_dataset(DataSettings(source, rlds_as_is=True, **options))
    # Described by one pass, never copied: no shards, the conversion's counts and statistics.
    assert streamed.tensors is None and streamed.metadata.stream_of and not streamed.metadata.shards
    assert sorted(path.name for path in pathlib.Path(streamed.directory).iterdir()) == ["metadata.json"]
    assert (streamed.metadata.num_transitions, streamed.metadata.num_episodes) == (
        held.metadata.num_transitions, held.metadata.num_episodes)
    for name, value in held.metadata.statistics.items():
        if name != "shards_bytes":  # merged per episode against numpy's whole-array sums: float64 rounding
            np.testing.assert_allclose(streamed.metadata.statistics[name], value, rtol=1e-12, atol=1e-15,
                                       err_msg=name)
    # One epoch of the stream is the converted rows, bit for bit, in another order; never cached in memory (TFDS
    # caches a dataset this small unless told not to, and the cache would hold it and enter every checkpoint).
    stream = rlds_source.stream_rows(streamed.metadata.stream_of, seed=0)
    assert b"CacheDataset" not in stream._as_serialized_graph().numpy()
    blocks = list(stream.as_numpy_iterator())
    converted, _ = load_converted(held.directory)

    def table(rows):
        columns = np.concatenate([np.asarray(rows[key]).reshape(len(rows["rewards"]), -1)
                                  for key in transitions.TRANSITION_KEYS], axis=1)
        return columns[np.lexsort(columns.T[::-1])]

    np.testing.assert_array_equal(table({key: np.concatenate([block[key] for block in blocks])
                                         for key in transitions.TRANSITION_KEYS}), table(converted))

    # The iterator is checkpointed: a stream restored where it was saved reads the same groups on.
    def next_groups(batches, count):
        groups = []
        for _ in range(count):
            batches.position.assign(GROUP)
            batches.available()
            groups.append(batches.group["observations"].numpy())
        return groups

    make = lambda: StreamedBatches(streamed.directory, streamed.metadata, streamed.preprocessing, 1, 8, 64,  # noqa
                                   seed=3)
    first = make()
    next_groups(first, 1)
    saved = tf.train.Checkpoint(iterator=first.iterator).save(str(tmp_path / "stream" / "ckpt"))
    expected = next_groups(first, 2)
    second = make()
    tf.train.Checkpoint(iterator=second.iterator).restore(saved)
    for got, want in zip(next_groups(second, 2), expected):
        np.testing.assert_array_equal(got, want)
    # And it trains, streamed.
    run = train(tmp_path / "run", DataSettings(source, rlds_as_is=True, **options),
                AgentSettings(hidden_dims=(8,), batch_size=16, jit_compile=False),
                RunSettings(num_offline_steps=20, steps_per_call=10, progress_bar=False, eval_episodes=0))
    assert int(run.trained().agent.step) == 20
    with pytest.raises(UserError, match=r"validation_fraction with make_dataset.rlds_as_is = True; a held-out split "
                                        r"needs the dataset converted"):
        make_dataset(DataSettings(source, rlds_as_is=True, validation_fraction=0.2, **options))
    with pytest.raises(UserError, match=r"describes rlds:.* streamed as it is and holds no data of its own"):
        make_dataset(DataSettings(streamed.directory, streaming=False))
    # Streaming asked for, a dataset that fits: converted and its shards streamed (no stream_of).
    assert make_dataset(DataSettings(source, streaming=True, **options)).metadata.stream_of is None
    # A dataset moved after its scan is one line when the stream opens it.
    moved = tmp_path / "moved"
    shutil.copytree(robot_rlds, moved)
    described = make_dataset(DataSettings(f"rlds:{moved}", rlds_as_is=True, **options))
    shutil.rmtree(moved)
    with pytest.raises(UserError, match=r"the RLDS dataset to stream cannot be opened any more .* give its source"):
        StreamedBatches(described.directory, described.metadata, described.preprocessing, 1, 8, 64, seed=3)


def test_generated_data_is_written_as_rlds_that_tfds_alone_reads(pointmaze_root, monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pointmaze_root))
    generate.write_rlds("pointmaze/umaze-example-v0", str(tmp_path / "written"))  # iql-generate --rlds_dir
    data = read_source("pointmaze/umaze-example-v0").transitions
    episodes = int(data["dones"].sum())
    probe = ("import sys, tensorflow_datasets as tfds\n"
             "assert 'iql_tf' not in sys.modules\n"
             f"builder = tfds.builder_from_directory({str(tmp_path / 'written')!r})\n"
             "steps = sum(int(e['steps'].cardinality()) for e in builder.as_dataset(split='train'))\n"
             "print(builder.info.splits['train'].num_examples, steps)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": ""}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(episodes), str(len(data["rewards"]) + episodes)]  # a final step each
    back = read_source(f"rlds:{tmp_path / 'written'}")
    for key in transitions.TRANSITION_KEYS:
        np.testing.assert_array_equal(back.transitions[key], data[key], err_msg=key)
    with pytest.raises(UserError, match=r"already exists; choose a new folder"):
        generate.write_rlds("pointmaze/umaze-example-v0", str(tmp_path / "written"))


def test_what_is_no_rlds_dataset_is_one_line(robot_rlds, tmp_path):
    with pytest.raises(UserError, match=r"no dataset_info.json in .*, so not a TFDS dataset folder"):
        read_source(f"rlds:{tmp_path}")
    with pytest.raises(UserError, match=r"names look like tfds:d4rl_mujoco_hopper/v2-medium:1.2.0"):
        read_source("tfds:no_such_dataset/v1")
    with pytest.raises(UserError, match=r"not prepared in .*; allow the download"):
        make_dataset(DataSettings("tfds:d4rl_mujoco_hopper/v2-random", tfds_data_dir=str(tmp_path)))
    with pytest.raises(UserError, match=r"make_dataset.rlds_final_step = 'last' must be one of observation, "
                                        r"transition"):
        DataSettings("x", rlds_final_step="last")
    # A damaged shard: named, nothing converted.
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in robot_rlds.iterdir():
        content = path.read_bytes()
        (damaged / path.name).write_bytes(content[:len(content) // 2] if ".tfrecord" in path.name else content)
    with pytest.raises(UserError, match=r"a shard could not be read .*robot_reach-train.tfrecord-00000"):
        make_dataset(DataSettings(f"rlds:{damaged}", cache_dir=str(tmp_path / "cache")))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_empty_episodes_and_integer_flags_read_as_the_same_transitions(tmp_path):
    # Flags stored as integers (some writers do), and an episode without steps between two others: the same
    # transitions as the same episodes with boolean flags and no empty one.
    def features(flag_dtype):
        return tfds.features.FeaturesDict({"steps": tfds.features.Dataset({
            "observation": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "action": tfds.features.Tensor(shape=(1,), dtype=np.float32), "reward": np.float32,
            "is_first": flag_dtype, "is_last": flag_dtype, "is_terminal": flag_dtype})})

    def episodes(flag_dtype, with_empty):
        for index, length in enumerate((4, 0, 3) if with_empty else (4, 3)):
            if not length:
                yield {"steps": {"observation": np.zeros((0, 2), np.float32), "action": np.zeros((0, 1), np.float32),
                                 "reward": np.zeros(0, np.float32), "is_first": np.zeros(0, flag_dtype),
                                 "is_last": np.zeros(0, flag_dtype), "is_terminal": np.zeros(0, flag_dtype)}}
                continue
            last = (np.arange(length) == length - 1).astype(flag_dtype)
            observations = (np.full((length, 2), 10 * length) + np.arange(length)[:, None]).astype(np.float32)
            yield {"steps": {"observation": observations,
                             "action": np.ones((length, 1), np.float32), "reward": np.arange(length, dtype=np.float32),
                             "is_first": (np.arange(length) == 0).astype(flag_dtype), "is_last": last,
                             "is_terminal": last * (index == 0)}}

    plain = rlds_writer.write_episodes(tmp_path / "plain", "plain", features(np.bool_), episodes(np.bool_, False))
    odd = rlds_writer.write_episodes(tmp_path / "odd", "odd", features(np.int32), episodes(np.int32, True))
    expected, got = read_source(f"rlds:{plain}").transitions, read_source(f"rlds:{odd}").transitions
    assert expected["terminals"].tolist() == [0, 0, 1, 0, 0] and expected["dones"].sum() == 2
    for key in transitions.TRANSITION_KEYS:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_one_camera_reads_as_images_held_and_streamed_with_its_stacks_and_beside_the_state_as_parts(tmp_path):
    """An RLDS observation of a camera and a state: the camera alone reads as uint8 frames (converted, or
    streamed as it is with frame stacks built per episode, the FQL repository's stacks), the state alone as a
    vector, both together (the default) as observations of two parts."""
    from iql_tf.data.streaming import StreamedBatches
    from test_images import fql_stacks, held_rows

    features = tfds.features.FeaturesDict({"steps": tfds.features.Dataset({
        "observation": tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 3)),
                                                   "state": tfds.features.Tensor(shape=(2,), dtype=np.float32)}),
        "action": tfds.features.Tensor(shape=(1,), dtype=np.float32), "reward": np.float32,
        "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_})})
    steps, count = 5, 3

    def episode(index):  # frame t of episode i filled with 16 * i + t: every frame its own
        frames = np.stack([np.full((8, 8, 3), 16 * index + t, np.uint8) for t in range(steps)])
        return {"steps": {"observation": {"image": frames, "state": np.zeros((steps, 2), np.float32)},
                          "action": np.full((steps, 1), index / 10, np.float32),
                          "reward": np.arange(steps, dtype=np.float32) * (index + 1), "is_first": np.arange(steps) == 0,
                          "is_last": np.arange(steps) == steps - 1, "is_terminal": np.zeros(steps, bool)}}

    single = episode(count)  # one step: no transition (an episode of no rows in the stream)
    single["steps"] = {key: (value[:1] if not isinstance(value, dict) else {k: v[:1] for k, v in value.items()})
                       for key, value in single["steps"].items()}
    single["steps"]["is_last"] = np.array([True])
    folder = rlds_writer.write_episodes(tmp_path / "camera", "camera", features,
                                        [episode(0), single] + [episode(i) for i in range(1, count)])
    source, cache = f"rlds:{folder}", str(tmp_path / "cache")
    both = make_dataset(DataSettings(source, cache_dir=cache))
    assert [(part.name, part.shape) for part in both.metadata.parts] == [("image", (8, 8, 3)), ("state", (2,))]
    assert both.metadata.observation_keys is None
    state_only = make_dataset(DataSettings(source, cache_dir=cache, observation_keys=["state"]))
    assert state_only.metadata.observation_shape == [2]

    camera = make_dataset(DataSettings(source, cache_dir=cache, observation_keys=["image"], frame_stack=2))
    assert camera.metadata.images and camera.metadata.observation_shape == [8, 8, 3]
    frames = np.stack([episode(i)["steps"]["observation"]["image"] for i in range(count)])
    np.testing.assert_array_equal(camera.tensors["observations"].numpy(), frames[:, :-1].reshape(-1, 8, 8, 3))
    next_frames = frames[:, 1:].reshape(-1, 8, 8, 3)
    np.testing.assert_array_equal(held_rows(camera)["next_observations"], next_frames)
    expected = fql_stacks(camera.tensors["observations"].numpy(), next_frames, camera.tensors["dones"].numpy(), 2)

    streamed = make_dataset(DataSettings(source, cache_dir=cache, observation_keys=["image"], frame_stack=2,
                                         rlds_as_is=True))
    rows = count * (steps - 1)  # a batch of every row: one epoch, permuted
    batches = StreamedBatches(streamed.directory, streamed.metadata, streamed.preprocessing, 1, rows, rows, seed=0,
                              frame_stack=2)
    batches.available()
    batch = batches.sample([])
    order = np.argsort(batch["observations"].numpy()[0, :, 0, 0, -1])  # the current frame's value
    np.testing.assert_array_equal(batch["observations"].numpy()[0][order], expected[0])
    np.testing.assert_array_equal(batch["next_observations"].numpy()[0][order], expected[1])
    agent = iql_tf.IQL.from_config("locomotion", hidden_dims=(4,), batch_size=4, encoder="conv_small",
                                   jit_compile=False, frame_stack=2, observation_keys=["image"], rlds_as_is=True,
                                   eval_episodes=0, progress_bar=False, cache_dir=cache)
    agent.fit(source, steps=2, workdir=str(tmp_path / "run"))
    assert agent.predict(frames[0, :1].repeat(2, -1)).shape == (1, 1)


def test_an_open_x_like_dataset_of_two_cameras_a_state_and_a_language_instruction_trains_through_the_pixel_path(
        tmp_path):
    """Open X-Embodiment's layout (as its RLDS datasets have it): a camera, a wrist camera and the robot's state,
    a 7-dimensional action, a language instruction, reward 1 on the last step, which is terminal. Read as parts
    (the instruction kept out of the networks), converted and streamed as it is alike, trained with frame stacks,
    exported with an input per part."""
    features = tfds.features.FeaturesDict({"steps": tfds.features.Dataset({
        "observation": tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(16, 16, 3)), "wrist_image": tfds.features.Image(shape=(16, 16, 3)),
            "state": tfds.features.Tensor(shape=(STATE,), dtype=np.float32)}),
        "action": tfds.features.Tensor(shape=(ACTION,), dtype=np.float32), "reward": np.float32,
        "discount": np.float32, "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_,
        "language_instruction": tfds.features.Text()})})
    rng = np.random.default_rng(0)
    steps = [6, 4, 7, 5]

    def episode(length):
        return {"steps": {
            "observation": {"image": rng.integers(0, 256, (length, 16, 16, 3), dtype=np.uint8),
                            "wrist_image": rng.integers(0, 256, (length, 16, 16, 3), dtype=np.uint8),
                            "state": rng.normal(size=(length, STATE)).astype(np.float32)},
            "action": rng.uniform(-1, 1, (length, ACTION)).astype(np.float32),
            "reward": (np.arange(length) == length - 1).astype(np.float32), "discount": np.ones(length, np.float32),
            "is_first": np.arange(length) == 0, "is_last": np.arange(length) == length - 1,
            "is_terminal": np.arange(length) == length - 1,
            "language_instruction": ["put the cube in the bowl"] * length}}

    episodes = [episode(length) for length in steps]
    folder = rlds_writer.write_episodes(tmp_path / "openx", "openx_like", features, episodes)
    source, cache = f"rlds:{folder}", str(tmp_path / "cache")
    held = make_dataset(DataSettings(source, cache_dir=cache, observation_keys=["image", "wrist_image", "state"],
                                     rlds_final_step="transition"))
    assert [part.name for part in held.metadata.parts] == ["image", "wrist_image", "state"]
    from iql_tf.data.pipeline import load_converted

    tensors, _ = load_converted(held.directory)
    rows = {key: tf.nest.map_structure(lambda value: value.numpy(), value) for key, value in tensors.items()}
    # Every step a transition (the terminal last one of its own), reward 1 and mask 0 on each episode's last.
    assert len(rows["rewards"]) == sum(steps) and rows["rewards"].sum() == len(steps)
    np.testing.assert_array_equal(rows["terminals"], rows["rewards"])
    np.testing.assert_array_equal(rows["observations"]["wrist_image"],
                                  np.concatenate([e["steps"]["observation"]["wrist_image"] for e in episodes]))
    np.testing.assert_array_equal(rows["next_observations"]["state"][:steps[0] - 1],
                                  episodes[0]["steps"]["observation"]["state"][1:])

    # Streamed as it is, with two-frame stacks built per episode: the converted rows' stacks, each part's.
    from iql_tf.data.streaming import StreamedBatches
    from test_images import fql_stacks

    streamed = make_dataset(DataSettings(source, cache_dir=cache, observation_keys=["image", "wrist_image", "state"],
                                         rlds_final_step="transition", rlds_as_is=True, frame_stack=2,
                                         reward_preprocessing="none"))
    batches = StreamedBatches(streamed.directory, streamed.metadata, streamed.preprocessing, 1, sum(steps),
                              sum(steps), seed=0, frame_stack=2)
    batches.available()
    batch = tf.nest.map_structure(lambda value: value.numpy()[0], batches.sample([]))
    order = np.argsort(batch["observations"]["state"][:, 0])
    want = np.argsort(rows["observations"]["state"][:, 0])
    for name in ("image", "wrist_image"):
        stacks = fql_stacks(rows["observations"][name], rows["next_observations"][name], rows["dones"], 2)
        np.testing.assert_array_equal(batch["observations"][name][order], stacks[0][want], err_msg=name)
        np.testing.assert_array_equal(batch["next_observations"][name][order], stacks[1][want], err_msg=name)
    np.testing.assert_array_equal(batch["next_observations"]["state"][order], rows["next_observations"]["state"][want])

    run_dir = tmp_path / "run"
    agent = iql_tf.IQL.from_config("locomotion", hidden_dims=(4,), batch_size=4, encoder="conv_small",
                                   jit_compile=False, frame_stack=2, rlds_final_step="transition", rlds_as_is=True,
                                   reward_preprocessing="none",
                                   observation_keys=["image", "wrist_image", "state"], eval_episodes=0,
                                   progress_bar=False, cache_dir=cache)
    agent.fit(source, steps=3, workdir=str(run_dir))
    policy = read_policy_metadata(run_dir / "export" / "policy")
    assert [part["name"] for part in policy.observation_parts] == ["image", "wrist_image", "state"]
    assert [tuple(part.shape) for part in policy.input_parts] == [(16, 16, 6), (16, 16, 6), (STATE,)]
    first = {"image": np.concatenate([rows["observations"]["image"][:1]] * 2, -1),
             "wrist_image": np.concatenate([rows["observations"]["wrist_image"][:1]] * 2, -1),
             "state": rows["observations"]["state"][:1]}
    assert agent.predict(first).shape == (1, ACTION)
    # The command line's way, converted (not streamed as it is), without stacks.
    gin.clear_config()
    config.parse_gin(["locomotion"], [f"make_dataset.source = '{source}'", f"make_dataset.cache_dir = '{cache}'",
                                      "make_dataset.rlds_final_step = 'transition'", "make_dataset.rlds_as_is = False",
                                      "make_dataset.reward_preprocessing = 'none'", "IQLAgent.hidden_dims = (4,)",
                                      "IQLAgent.encoder = 'conv_small'", "IQLAgent.jit_compile = False",
                                      "train.num_offline_steps = 3", "train.eval_episodes = 0",
                                      "train.progress_bar = False"])
    run_training(str(tmp_path / "cli"))
    parts = read_policy_metadata(tmp_path / "cli" / "export" / "policy").input_parts
    assert [(part.name, part.shape) for part in parts] == [("image", (16, 16, 3)), ("state", (STATE,)),
                                                            ("wrist_image", (16, 16, 3))]  # every part, sorted
