"""make_dataset: reward preprocessing against numpy, action clipping, caching, gin, sources of every kind."""

import gin
import numpy as np
import pytest
from conftest import tiny_rows

from iql_tf.data import conversion, pipeline, rewards, sources
from iql_tf.data.pipeline import make_dataset
from iql_tf.settings import DataSettings
from iql_tf.errors import UserError


def reference_normalize(raw: dict) -> np.ndarray:
    """The reference's `normalize` on a D4RL file's own arrays, written out with loops: its loader ends a
    trajectory at a terminal, a timeout, or where the next row does not continue s' (then sorts returns)."""
    rewards_ = raw["rewards"]
    trajectories = [[]]
    for i, reward in enumerate(rewards_):
        trajectories[-1].append(reward)
        last = i + 1 == len(rewards_)
        jump = not last and np.linalg.norm(raw["observations"][i + 1] - raw["next_observations"][i]) > 1e-6
        if not last and (raw["terminals"][i] or raw["timeouts"][i] or jump):
            trajectories.append([])
    returns = sorted(sum(t) for t in trajectories)
    return rewards_ / (returns[-1] - returns[0]) * 1000.0


def test_trajectory_returns_and_transforms_on_hand_numbers():
    rewards_ = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    dones = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    returns = rewards.trajectory_returns(rewards_, dones)
    np.testing.assert_array_equal(returns, [3.0, 12.0, 6.0])
    spread = (returns.min(), returns.max(), returns.size)
    assert rewards.transform_from_returns("locomotion", *spread) == rewards.RewardTransform(
        "locomotion", scale=1000.0 / 9.0
    )
    assert rewards.transform_from_returns("antmaze", *spread) == rewards.RewardTransform("antmaze", shift=-1.0)
    assert rewards.transform_from_returns("none", *spread) == rewards.RewardTransform("none")
    with pytest.raises(UserError, match="spread of trajectory returns, which is 0"):
        rewards.transform_from_returns("locomotion", 2.0, 2.0, 2)


def test_unknown_preprocessing_lists_the_valid_modes(write_npz, tmp_path):
    with pytest.raises(UserError, match=r"reward_preprocessing='d4rl' is unknown; valid values: none, locomotion, "
                                        r"antmaze"):
        make_dataset(DataSettings(str(write_npz()), reward_preprocessing="d4rl", cache_dir=str(tmp_path / "cache")))
    assert not (tmp_path / "cache").exists()  # checked before any conversion


@pytest.mark.parametrize("mode", ["none", "locomotion", "antmaze"])
def test_reward_preprocessing_matches_numpy(mode, hopper_npz, tmp_path):
    source = hopper_npz
    dataset = make_dataset(DataSettings(str(source), reward_preprocessing=mode, cache_dir=str(tmp_path)))
    with np.load(source) as file:
        raw = dict(file)
    original = raw["rewards"]
    expected = {
        "none": original,
        "locomotion": reference_normalize(raw),  # trajectories from the file, not from the code's dones
        "antmaze": original - 1.0,
    }[mode]
    np.testing.assert_allclose(dataset.tensors["rewards"], expected, rtol=1e-5)
    assert dataset.preprocessing.reward.mode == mode


@pytest.mark.parametrize("with_next_observations, spread", [
    # tiny_rows' episodes: rows 0-3 (terminal), 4-8 (timeout), 9-11 (end of file); returns 4, 58, 70.
    (True, 70.0 - 4.0),
    # Without next_observations the timeout row 8 and the last row 11 are dropped: returns 4, 8, 0.
    (False, 8.0 - 0.0),
])
def test_locomotion_scale_from_hand_computed_trajectory_returns(with_next_observations, spread, write_npz, tmp_path):
    rewards_ = np.array([1, 1, 1, 1, 2, 2, 2, 2, 50, 0, 0, 70], np.float32)
    # s' continues into the next row everywhere, so only the terminal and the timeout can end a trajectory.
    observations = tiny_rows()["observations"]
    next_observations = np.append(observations[1:], observations[-1:] + 1, axis=0) if with_next_observations else None
    path = write_npz(rewards=rewards_, next_observations=next_observations)
    dataset = make_dataset(DataSettings(str(path), reward_preprocessing="locomotion", cache_dir=str(tmp_path / "cache")))
    assert dataset.preprocessing.reward.scale == pytest.approx(1000.0 / spread)


def test_actions_are_clipped_inside_the_open_interval(write_npz, tmp_path):
    actions = tiny_rows()["actions"]
    actions[0] = [1.0, -1.0]
    actions[1] = [1.0005, -1.0005]  # within the 1e-3 tolerance of the source check
    dataset = make_dataset(DataSettings(str(write_npz(actions=actions)), cache_dir=str(tmp_path / "cache")))
    clipped = dataset.tensors["actions"].numpy()
    np.testing.assert_array_equal(clipped[:2], np.float32([[1 - 1e-5, -(1 - 1e-5)]] * 2))
    np.testing.assert_array_equal(clipped[2:11], actions[2:11])  # the last row is 1.0 again
    assert clipped.max() == np.float32(1 - 1e-5)
    assert all(array.dtype.name == "float32" for array in dataset.tensors.values())


def test_conversion_is_cached_and_redone_when_the_source_changes(write_npz, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = write_npz()
    first = make_dataset(DataSettings(str(path), cache_dir=str(cache)))
    assert len(list(cache.iterdir())) == 1

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "convert", no_conversion)
        again = make_dataset(DataSettings(str(path), cache_dir=str(cache)))
    np.testing.assert_array_equal(again.tensors["rewards"], first.tensors["rewards"])

    write_npz(rewards=tiny_rows()["rewards"] + 7.0)  # same path, new content
    changed = make_dataset(DataSettings(str(path), cache_dir=str(cache)))
    np.testing.assert_array_equal(changed.tensors["rewards"], first.tensors["rewards"] + 7.0)
    assert len(list(cache.iterdir())) == 2


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IQL_TF_DATA_DIR", str(tmp_path))
    assert pipeline.default_cache_dir() == str(tmp_path)


def test_gin_configures_make_dataset_and_converted_directories_load_directly(write_npz, tmp_path):
    conversion.convert(sources.resolve(str(write_npz())), tmp_path / "converted")
    gin.parse_config(f"""
        make_dataset.source = '{tmp_path / "converted"}'
        make_dataset.reward_preprocessing = 'antmaze'
    """)
    dataset = make_dataset(DataSettings())
    np.testing.assert_allclose(dataset.tensors["rewards"], tiny_rows()["rewards"] - 1.0)
    assert dataset.metadata.source == str(tmp_path / "data.npz")


def test_minari_example_loads_through_the_cache(pointmaze_root, monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pointmaze_root))
    dataset = make_dataset(DataSettings("pointmaze/umaze-example-v0", cache_dir=str(tmp_path)))
    assert dataset.tensors["observations"].shape == (400, 8)
    assert dataset.metadata.observation_keys == ["achieved_goal", "desired_goal", "observation"]
    assert dataset.metadata.num_episodes == 4 and dataset.metadata.env_id == "PointMaze_UMaze-v3"
    assert [p.name.startswith("pointmaze_umaze-example-v0-") for p in tmp_path.iterdir()] == [True]


def test_sources_that_are_not_datasets(minari_root, tmp_path):
    with pytest.raises(UserError, match="minari download D4RL/door/human-v2"):
        make_dataset(DataSettings("D4RL/door/human-v2", cache_dir=str(tmp_path / "cache")))
    with pytest.raises(UserError, match=r"missing.npz: file not found"):
        make_dataset(DataSettings(str(tmp_path / "missing.npz"), cache_dir=str(tmp_path / "cache")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: a directory without metadata.json, so not a converted dataset"):
        make_dataset(DataSettings(str(tmp_path / "empty"), cache_dir=str(tmp_path / "cache")))
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("binding", [dict(env_id="Hopper-v5"), dict(env_kwargs={"continuing_task": False}),
                                     dict(action_bounds=(-2, 2))])
def test_env_bindings_with_a_converted_directory_are_an_error(binding, write_npz, tmp_path):
    conversion.convert(sources.resolve(str(write_npz())), tmp_path / "converted")
    with pytest.raises(UserError, match=rf"^{tmp_path / 'converted'}: is already converted with env_id=None, "
                                        rf"env_kwargs=\{{\}} and its action bounds, so make_dataset.{next(iter(binding))} "
                                        r"cannot apply to it; re-convert its source"):
        make_dataset(DataSettings(str(tmp_path / "converted"), **binding))
    assert make_dataset(DataSettings(str(tmp_path / "converted"), env_kwargs={})).metadata.env_id is None  # empty: no binding


def test_a_damaged_cache_entry_is_converted_again(write_npz, tmp_path):
    cache = tmp_path / "cache"
    path = write_npz()
    first = make_dataset(DataSettings(str(path), cache_dir=str(cache)))
    (entry,) = cache.iterdir()
    shard = next(entry.glob("shard-*.tfrecord"))
    shard.write_bytes(shard.read_bytes()[:-5])  # truncated by a full disk, say
    again = make_dataset(DataSettings(str(path), cache_dir=str(cache)))
    np.testing.assert_array_equal(again.tensors["rewards"], first.tensors["rewards"])
    (entry / "metadata.json").unlink()  # an entry someone half deleted
    make_dataset(DataSettings(str(path), cache_dir=str(cache)))
    assert [p.name for p in cache.iterdir()] == [entry.name] and (entry / "metadata.json").is_file()


def test_actions_are_rescaled_to_the_unit_interval_from_their_bounds(write_npz, tmp_path):
    actions = np.linspace(-2, 2, 24, dtype=np.float32).reshape(12, 2)
    dataset = make_dataset(DataSettings(str(write_npz(actions=actions)), cache_dir=str(tmp_path), action_bounds=(-2.0, 2.0)))
    np.testing.assert_allclose(dataset.tensors["actions"], np.clip(actions / 2, -1 + 1e-5, 1 - 1e-5))
    np.testing.assert_allclose(dataset.preprocessing.actions_from_unit(dataset.tensors["actions"][1:-1]),
                               actions[1:-1], rtol=1e-5)
    assert dataset.metadata.action_low == [-2.0, -2.0]


def test_observation_normalisation_uses_the_dataset_statistics(write_npz, tmp_path):
    rows = tiny_rows()
    plain = make_dataset(DataSettings(str(write_npz()), cache_dir=str(tmp_path)))
    normalised = make_dataset(DataSettings(str(write_npz()), cache_dir=str(tmp_path), normalize_observations=True))
    mean, std = rows["observations"].mean(0), rows["observations"].std(0) + 1e-3
    np.testing.assert_allclose(normalised.tensors["observations"], (rows["observations"] - mean) / std,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(normalised.tensors["next_observations"],
                               (rows["next_observations"] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(plain.tensors["observations"], rows["observations"])
    assert not plain.preprocessing.normalize_observations


def test_a_held_out_split_takes_whole_trajectories_that_training_never_sees(hopper_npz, tmp_path):
    whole = make_dataset(DataSettings(str(hopper_npz), cache_dir=str(tmp_path)))
    split = make_dataset(DataSettings(str(hopper_npz), cache_dir=str(tmp_path), validation_fraction=0.25))
    trajectories = int(whole.metadata.num_episodes)
    held_out = split.validation["dones"].numpy().sum()
    assert held_out == round(0.25 * trajectories) and split.metadata.num_episodes == trajectories - held_out

    def rows(tensors):
        return {tuple(row) for row in np.concatenate([tensors["observations"].numpy(), tensors["actions"].numpy()], 1)}

    training, validation = rows(split.tensors), rows(split.validation)
    assert not training & validation and training | validation == rows(whole.tensors)
    # Statistics of the training part alone; the held-out part prepared with them.
    raw = split.tensors["observations"].numpy()
    np.testing.assert_allclose(split.metadata.statistics["observation_mean"], raw.mean(0), atol=1e-5)
    with pytest.raises(UserError, match=r"validation_fraction = 1.0 must be a number in \[0, 1\)"):
        DataSettings(str(hopper_npz), validation_fraction=1.0)
    with pytest.raises(UserError, match=r"validation_fraction 0.001 of its \d+ trajectories holds out 0"):
        make_dataset(DataSettings(str(hopper_npz), cache_dir=str(tmp_path), validation_fraction=0.001))
    converted = tmp_path / "converted"
    conversion.convert(sources.resolve(str(hopper_npz)), converted)
    with pytest.raises(UserError, match=r"holds no held-out split; convert its source again with "
                                        r"--validation_fraction=0.25"):
        make_dataset(DataSettings(str(converted), validation_fraction=0.25))
