"""Transition semantics (docs/semantics.md) on hand-made rows and on generated example datasets."""

import ast
import json
import pathlib

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest
from conftest import tiny_rows
from minari.data_collector import EpisodeBuffer

import datasets
from iql_tf import envs, generation
from iql_tf.data import sources, transitions, validation
from iql_tf.errors import UserError


def test_rows_with_next_observations_keep_every_row():
    rows = tiny_rows()
    data = transitions.from_rows(**rows)
    np.testing.assert_array_equal(data["next_observations"], rows["next_observations"])
    np.testing.assert_array_equal(data["terminals"], rows["terminals"].astype(np.float32))
    # A timeout is not terminal (its mask stays 1), but it ends a trajectory, like the terminal and the last row.
    assert data["terminals"][8] == 0.0
    np.testing.assert_array_equal(np.flatnonzero(data["dones"]), [3, 8, 11])


def test_rows_discontinuity_ends_a_trajectory():
    rows = tiny_rows()
    rows["next_observations"][5] += 1e-3  # s'_5 != s_6: the reference splits there
    rows["next_observations"][6] += 1e-8  # below the 1e-6 tolerance: same trajectory
    data = transitions.from_rows(**rows)
    np.testing.assert_array_equal(np.flatnonzero(data["dones"]), [3, 5, 8, 11])


def test_rows_without_next_observations_use_the_next_row_and_drop_episode_ends():
    rows = tiny_rows()
    del rows["next_observations"]
    data = transitions.from_rows(**rows)
    # Row 8 (timeout) and row 11 (end of file) have no s' in their episode; the terminal row 3 is kept.
    kept = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10]
    np.testing.assert_array_equal(data["observations"], rows["observations"][kept])
    expected_next = rows["observations"][[1, 2, 3, 3, 5, 6, 7, 8, 10, 11]]  # terminal row: s' = s (masked)
    np.testing.assert_array_equal(data["next_observations"], expected_next)
    np.testing.assert_array_equal(data["actions"], rows["actions"][kept])
    np.testing.assert_array_equal(data["rewards"], rows["rewards"][kept])
    np.testing.assert_array_equal(np.flatnonzero(data["terminals"]), [3])
    np.testing.assert_array_equal(np.flatnonzero(data["dones"]), [3, 7, 9])
    # No transition crosses an episode boundary: s' is always this episode's next observation (or s).
    assert not np.any(data["next_observations"][:, 0] - data["observations"][:, 0] > 1)


def test_episode_uses_consecutive_observations_and_terminations_only():
    observations = np.arange(8, dtype=np.float64).reshape(4, 2)  # T + 1 = 4 observations, T = 3 actions
    data = transitions.from_episode(observations, np.zeros((3, 1)), np.ones(3), np.array([False, False, True]))
    np.testing.assert_array_equal(data["observations"], observations[:3])
    np.testing.assert_array_equal(data["next_observations"], observations[1:])
    np.testing.assert_array_equal(data["terminals"], [0, 0, 1])
    np.testing.assert_array_equal(data["dones"], [0, 0, 1])
    assert all(data[key].dtype == np.float32 for key in transitions.TRANSITION_KEYS)


def test_hopper_rows_example(hopper_npz, hopper_rows):
    data = datasets.read_source(str(hopper_npz))
    t = data.transitions
    assert t["observations"].shape == hopper_rows["observations"].shape
    np.testing.assert_array_equal(t["terminals"], hopper_rows["terminals"].astype(np.float32))
    # Every episode ends in a done: the falls and the one cut by the end of the collection.
    falls, cut = int(hopper_rows["terminals"].sum()), int(hopper_rows["timeouts"].sum())
    assert falls > 10 and cut == 1
    assert t["dones"].sum() == falls + cut == data.num_episodes
    assert t["dones"][-1] == 1 and t["terminals"][-1] == 0
    # Without an env id the file names no environment and no reference scores; actions are taken in [-1, 1].
    assert data.env_id is None and data.ref_min_score is None
    assert data.action_low.tolist() == [-1.0] * 3


def test_env_override_records_spaces_and_d4rl_locomotion_scores(hopper_npz):
    data = datasets.read_source(str(hopper_npz), env_id="Hopper-v5")
    assert (data.env_id, data.max_episode_steps) == ("Hopper-v5", 1000)
    assert (data.ref_min_score, data.ref_max_score) == sources.D4RL_LOCOMOTION_SCORES["hopper"]
    # The same check as training's (envs.check_env_fits), naming the dataset.
    with pytest.raises(UserError, match=r"^dataset .*hopper-random.npz has observations of size 11 and "
                                        r"actions of size 3, but environment Walker2d-v5 has 17 and 6"):
        datasets.read_source(str(hopper_npz), env_id="Walker2d-v5")


def test_actions_keep_the_units_of_their_action_space(write_npz):
    # Pendulum's shapes: 3 observation columns, 1 action in [-2, 2].
    actions = np.linspace(-2, 2, 12, dtype=np.float32)[:, None]
    path = write_npz(actions=actions)
    data = datasets.read_source(str(path), env_id="Pendulum-v1")
    assert (data.action_low.tolist(), data.action_high.tolist()) == ([-2.0], [2.0])
    np.testing.assert_array_equal(data.transitions["actions"], actions)  # stored as given
    # Without an environment the bounds are [-1, 1] unless given.
    with pytest.raises(UserError, match=rf"^{path}: field 'actions' row 0 has value -2 outside \[-1, 1\] .*no "
                                        r"environment gives this dataset's action bounds.*action_bounds"
                                        r".* \(6 rows in all: 0, 1, 2, 9, 10, ...\)"):
        datasets.read_source(str(path))
    given = datasets.read_source(str(path), action_bounds=(-2.0, 2.0))
    assert given.action_high.tolist() == [2.0]
    # Actions beyond the environment's bounds are in other units.
    with pytest.raises(UserError, match=r"field 'actions' row 0 has value -4 outside the action space \[-2, 2\] "
                                        r"of Pendulum-v1"):
        datasets.read_source(str(write_npz(actions=2 * actions)), env_id="Pendulum-v1")


@pytest.mark.filterwarnings("ignore::UserWarning")  # minari asks for author, description, ...
@pytest.mark.parametrize("action_space, actions, message", [
    (gym.spaces.Discrete(3), np.zeros(2, np.int64), r"action space Discrete\(3\) is not a Box"),
    (gym.spaces.Box(-np.inf, np.inf, (2,)), np.zeros((2, 2), np.float32), r"action space Box.* is unbounded in dimension\(s\) \[0, 1\]"),
])
def test_minari_dataset_needs_a_bounded_box_action_space(minari_root, action_space, actions, message):
    episode = EpisodeBuffer(observations=np.zeros((3, 2)), actions=actions, rewards=np.ones(2),
                            terminations=np.array([False, True]), truncations=np.zeros(2, bool))
    minari.create_dataset_from_buffers("tt/wide-v0", [episode], observation_space=gym.spaces.Box(-1, 1, (2,)),
                                       action_space=action_space)
    with pytest.raises(UserError, match=rf"^Minari dataset tt/wide-v0 \({minari_root / 'tt/wide-v0/data'}\): "
                                        rf"{message}"):
        datasets.read_source("tt/wide-v0")


def test_minari_example_flattens_dict_observations_in_sorted_key_order(pointmaze_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pointmaze_root))
    data = datasets.read_source("pointmaze/umaze-example-v0")
    t = data.transitions
    assert t["observations"].shape == (400, 8) and data.num_episodes == 4
    assert data.observation_keys == ["achieved_goal", "desired_goal", "observation"]
    with h5py.File(pointmaze_root / "pointmaze/umaze-example-v0/data/main_data.hdf5", "r") as file:
        episode = file["episode_2"]
        raw = {key: episode[f"observations/{key}"][()] for key in data.observation_keys}
        expected = np.concatenate([raw["achieved_goal"], raw["desired_goal"], raw["observation"]], axis=1)
        actions = episode["actions"][()]
    np.testing.assert_allclose(t["observations"][200:300], expected[:-1].astype(np.float32))
    np.testing.assert_allclose(t["next_observations"][200:300], expected[1:].astype(np.float32))
    np.testing.assert_array_equal(t["actions"][200:300], actions)
    assert t["terminals"].sum() == 0  # time-limit truncations are not terminal
    np.testing.assert_array_equal(np.flatnonzero(t["dones"]), np.arange(99, 400, 100))
    # The evaluation env comes from eval_env_spec (goal cell 'g'), with its reference scores.
    assert data.env_id == "PointMaze_UMaze-v3" and data.max_episode_steps == 100
    assert data.env_kwargs["maze_map"][1][1] == "g"
    assert (data.ref_min_score, data.ref_max_score) == (15.6, 227.7)
    assert np.all(np.isinf(data.observation_low))


@pytest.mark.filterwarnings("ignore::UserWarning")  # minari asks for author, description, ...
def test_nested_dict_observations_flatten_in_sorted_path_order(minari_root):
    box = lambda n, bound=np.inf: gym.spaces.Box(-bound, bound, (n,))  # noqa: E731
    goals = gym.spaces.Dict({"kettle": box(3), "burner": box(1)})
    space = gym.spaces.Dict({"observation": box(2, 5.0), "desired_goal": goals})
    steps = 4
    rows = np.arange(steps + 1, dtype=np.float64)[:, None]
    episode = EpisodeBuffer(
        observations={"observation": np.hstack([rows, -rows]),
                      "desired_goal": {"kettle": np.hstack([rows, rows, rows]) + 10, "burner": rows + 100}},
        actions=np.zeros((steps, 2), np.float32), rewards=np.ones(steps),
        terminations=np.array([False] * 3 + [True]), truncations=np.zeros(steps, bool),
    )
    minari.create_dataset_from_buffers("tt/nested-v0", [episode], observation_space=space, action_space=box(2, 1.0))
    data = datasets.read_source("tt/nested-v0")
    assert data.observation_keys == envs.observation_keys(space) == [
        "desired_goal/burner", "desired_goal/kettle", "observation"]
    np.testing.assert_array_equal(data.transitions["observations"][1], [101, 11, 11, 11, 1, -1])
    np.testing.assert_array_equal(data.observation_high, [np.inf] * 4 + [5.0, 5.0])
    assert data.env_id is None and data.transitions["terminals"].tolist() == [0, 0, 0, 1]


def test_hdf5_source_reads_like_npz(tmp_path, write_npz):
    path = tmp_path / "data.hdf5"
    with h5py.File(path, "w") as file:
        for key, value in tiny_rows().items():
            file[key] = value
        file["infos/qpos"] = np.zeros((12, 2))  # extra D4RL groups are ignored
    from_hdf5 = datasets.read_source(str(path)).transitions
    from_npz = datasets.read_source(str(write_npz())).transitions
    for key in transitions.TRANSITION_KEYS:
        np.testing.assert_array_equal(from_hdf5[key], from_npz[key])


def test_missing_minari_id_is_one_error_without_network(minari_root, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(minari.storage.hosting, "download_dataset", no_network)
    with pytest.raises(UserError) as error:
        datasets.read_source("D4RL/antmaze/umaze-v1")
    message = str(error.value)
    assert "D4RL/antmaze/umaze-v1" in message and str(minari_root) in message
    assert "minari download D4RL/antmaze/umaze-v1" in message
    assert "make_dataset.download = True when training, --download for the converter" in message
    assert "MINARI_DATASETS_PATH" in message


def test_parse_env_kwargs():
    assert envs.parse_env_kwargs(json.dumps({"a": 1})) == {"a": 1}
    with pytest.raises(UserError, match="--env_kwargs"):
        envs.parse_env_kwargs("[1]")


def test_a_directory_is_not_mistaken_for_a_minari_id(minari_root, tmp_path, monkeypatch):
    with pytest.raises(UserError, match=rf"^{tmp_path}: a directory without metadata.json, so not a converted "
                                        r"dataset \(nor a Minari id\); convert a source into it with `python -m "
                                        rf"iql_tf.convert --source=FILE_OR_MINARI_ID --output={tmp_path}`"):
        sources.resolve(str(tmp_path))
    # Run from inside the Minari root, a Minari id is also a directory: it is still read as the id.
    episode = EpisodeBuffer(observations=np.zeros((2, 1)), actions=np.zeros((1, 1), np.float32), rewards=np.ones(1),
                            terminations=np.array([True]), truncations=np.zeros(1, bool))
    with pytest.warns(UserWarning):
        minari.create_dataset_from_buffers("tt/here-v0", [episode], observation_space=gym.spaces.Box(-1, 1, (1,)),
                                           action_space=gym.spaces.Box(-1, 1, (1,)))
    monkeypatch.chdir(minari_root)
    resolved = sources.resolve("tt/here-v0")
    assert resolved.kind == sources.MINARI and resolved.files[0].parent == (minari_root / "tt/here-v0/data").resolve()


def test_a_file_of_another_kind_is_not_mistaken_for_a_minari_id(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not data")
    with pytest.raises(UserError, match=r"notes.txt: not a dataset file \(expected .npz, .hdf5, .h5, .csv or "
                                        r"\.parquet\)"):
        sources.resolve(str(path))
    with pytest.raises(UserError, match=r"^3: not a source; pass a path, a Minari id, a converted directory or an "
                                        r"in-memory source"):
        sources.resolve(3)


def test_a_file_that_is_no_npz_is_named_so(tmp_path):
    text = tmp_path / "text.npz"
    text.write_text("observations,actions\n1,2\n")
    with pytest.raises(UserError, match=rf"^{text}: not an npz file \(no zip archive\); write the fields with "
                                        r"np.savez\('text.npz', observations=\.\.\."):
        datasets.read_source(str(text))
    array = tmp_path / "array.npz"
    with open(array, "wb") as file:
        np.save(file, np.zeros(3))
    with pytest.raises(UserError, match=r"array.npz: not an npz file \(an .npy file \(one array\)\)"):
        datasets.read_source(str(array))


def test_misnamed_npz_fields_are_shown_with_their_likely_names(write_npz):
    rows = tiny_rows()
    path = write_npz(observations=None, terminals=None, timeouts=None, next_observations=None,
                     observation=rows["observations"], dones=rows["terminals"], next_obs=rows["next_observations"])
    report = validation.Report()
    assert sources.read(sources.resolve(str(path)), report) is None
    lines = [problem.line() for problem in report.problems]
    keys = "['actions', 'dones', 'next_obs', 'observation', 'rewards']"  # the file's own, all of them
    assert lines[0].startswith(f"{path}: missing field 'observations' (the source has {keys}); did you mean "
                               "'observation'? store it as 'observations';")
    assert lines[1].startswith(f"{path}: missing field 'terminals' (the source has {keys}); did you mean 'dones'? "
                               "store it as 'terminals' (1 where the environment terminated, with no bootstrap")
    assert "missing field 'timeouts'" in lines[2] and "e.g. from the episode ends: timeouts = np.zeros(N, bool); " \
        "timeouts[last_rows] = True; timeouts &= ~terminals; or store 'episode_id'" in lines[2]
    assert len(lines) == 3
    # With every field there, a next_obs would be left out silently: it is named instead.
    with pytest.raises(UserError, match=r"data.npz: holds 'next_obs', which is not read: the field's name is "
                                        r"'next_observations'; store it as 'next_observations' to use it, or drop"):
        datasets.read_source(str(write_npz(next_observations=None, next_obs=rows["next_observations"])))


@pytest.mark.parametrize("field", ["actions", "observations"])
def test_zero_width_actions_or_observations_are_refused(field, write_npz):
    path = write_npz(**{field: np.zeros((12, 0), np.float32), "next_observations": None})
    with pytest.raises(UserError, match=rf"^{path}: field '{field}' has shape \[12, 0\]: no values in a row; store at "
                                        r"least one value per row"):
        datasets.read_source(str(path))


def test_the_read_path_never_imports_the_generators(minari_root):
    data_package = pathlib.Path(sources.__file__).parent
    for module in sorted(data_package.glob("*.py")):
        tree = ast.parse(module.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not any("generation" in name for name in imported), module.name
    # A generated id is recognised (once a command, or the trainer, has registered the generators), but
    # resolving or reading it generates nothing.
    generation.register_generated_datasets()
    resolved = sources.resolve("iql_tf/pointmaze/umaze-stitch-v0")
    assert resolved.kind == sources.GENERATED
    with pytest.raises(UserError, match="generated when training or converting it"):
        sources.read(resolved, validation.Report())
    assert list(minari_root.iterdir()) == []


def test_a_truncated_minari_file_is_one_error_saying_what_to_do(pointmaze_root, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "minari"
    shutil.copytree(pointmaze_root, root)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    data_file = root / "pointmaze/umaze-example-v0/data/main_data.hdf5"
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    with pytest.raises(UserError, match=r"(cannot be read|not a usable Minari dataset) \(.*\); .*truncated.*corrupt.*"
                                        r"download, copy or generate it again"):
        datasets.read_source("pointmaze/umaze-example-v0")
