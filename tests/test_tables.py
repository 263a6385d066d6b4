"""Tables (.csv, .parquet, DataFrames) and in-memory sources (arrays, tf.data) read through the row path that
npz files take: the same transitions, the same checks, one-line errors."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_rows

import datasets
from iql_tf.data import inspection
from iql_tf.data import conversion, from_arrays, from_pandas, from_tf_dataset, sources, transitions
from iql_tf.data.pipeline import load_converted
from iql_tf.errors import UserError

ROWS = tiny_rows()
EPISODES = ["a"] * 4 + ["b"] * 5 + ["c"] * 3  # tiny_rows' episodes: rows 0-3 (terminal), 4-8 (timeout), 9-11


def rows_frame(names=("observations_{}", "actions_{}", "next_observations/{}"), **extra) -> pd.DataFrame:
    """tiny_rows() as a table: one column per observation and action dimension, named by `names`."""
    columns = {}
    for field, name in zip(("observations", "actions", "next_observations"), names):
        for dim in range(ROWS[field].shape[1]):
            columns[name.format(dim)] = ROWS[field][:, dim]
    columns.update(rewards=ROWS["rewards"], terminals=ROWS["terminals"], timeouts=ROWS["timeouts"])
    columns.update(extra)
    return pd.DataFrame({name: values for name, values in columns.items() if values is not None})


def assert_same_transitions(data, expected):
    for key in transitions.TRANSITION_KEYS:
        np.testing.assert_array_equal(data.transitions[key], expected.transitions[key], err_msg=key)


def message(call) -> str:
    with pytest.raises(UserError) as error:
        call()
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_with_default_columns_read_like_the_npz(suffix, tmp_path, write_npz):
    path = tmp_path / f"log{suffix}"
    frame = rows_frame(("observations_{}", "actions.{}", "next_observations/{}"), notes=["x"] * 12)
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    expected = datasets.read_source(str(write_npz()))
    assert_same_transitions(datasets.read_source(str(path)), expected)
    resolved = sources.resolve(str(path))
    assert resolved.kind == sources.FILE and sources.identity(resolved)[0][0] == str(path)


def test_a_parquet_list_column_holds_a_whole_field(tmp_path, write_npz):
    path = tmp_path / "log.parquet"
    frame = rows_frame(observations=list(ROWS["observations"]))
    frame.drop(columns=[f"observations_{dim}" for dim in range(3)]).to_parquet(path)
    assert_same_transitions(datasets.read_source(str(path)), datasets.read_source(str(write_npz())))


def test_mapped_columns_in_the_order_given(tmp_path, write_npz):
    frame = pd.DataFrame({"z": -np.arange(12.0), "x": np.arange(12.0), "ax": ROWS["actions"][:, 0],
                          "r": ROWS["rewards"], "crashed": ROWS["terminals"], "cut": ROWS["timeouts"]})
    columns = {"observations": ["x", "z"], "actions": "ax", "rewards": "r", "terminals": "crashed",
               "timeouts": "cut"}
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    data = datasets.read_source(str(path), columns=columns)
    np.testing.assert_array_equal(data.transitions["observations"][:3], [[0, 0], [1, -1], [2, -2]])
    assert data.transitions["actions"].shape[1] == 1
    assert_same_transitions(datasets.read_source(from_pandas(frame, columns=columns)), data)
    with pytest.raises(UserError, match=r"columns .* given, but it is no .csv / .parquet table"):
        sources.resolve(str(write_npz()), columns=columns)


def test_episode_ids_give_the_timeouts(write_npz):
    expected = datasets.read_source(str(write_npz()))
    frame = rows_frame(timeouts=None, episode_id=EPISODES)
    assert_same_transitions(datasets.read_source(from_pandas(frame)), expected)
    without_next = {key: value for key, value in ROWS.items() if key not in ("timeouts", "next_observations")}
    by_ids = datasets.read_source(from_arrays(**without_next, episode_ids=[0] * 4 + [7] * 5 + [2] * 3))
    assert_same_transitions(by_ids, datasets.read_source(str(write_npz(next_observations=None))))
    # Neither timeouts nor ids: one continuous log, whose only end besides the terminal is its last row.
    log = datasets.read_source(from_arrays(**{key: ROWS[key] for key in without_next}))
    np.testing.assert_array_equal(np.flatnonzero(log.transitions["dones"]), [3, 10])
    assert log.num_episodes == 2


def test_an_episode_id_that_comes_back_is_one_line():
    frame = rows_frame(timeouts=None, episode_id=[0] * 4 + [1] * 5 + [0] * 3)
    text = message(lambda: datasets.read_source(from_pandas(frame, name="runs")))
    assert text.startswith("runs: field 'episode_id' row 9 starts episode 0 again after other episodes; the rows "
                           "of an episode must be together: sort them by episode")


def test_a_missing_column_names_the_columns_and_the_mapping(tmp_path):
    path = tmp_path / "log.csv"
    pd.DataFrame({"obs_0": ROWS["observations"][:, 0], "obs_1": ROWS["observations"][:, 1],
                  "act_0": ROWS["actions"][:, 0], "reward": ROWS["rewards"], "done": ROWS["terminals"],
                  "timeouts": ROWS["timeouts"]}).to_csv(path, index=False)
    mapped = {"observations": ["obs_0", "obs_1"], "actions": "act_0", "terminals": "done"}
    assert message(lambda: datasets.read_source(str(path), columns=mapped)) == (
        f"{path}: no column 'rewards' (columns: obs_0, obs_1, act_0, reward, done, timeouts); did you mean "
        "'reward'? map it with make_dataset.columns = {'rewards': 'reward'} (from_pandas(..., columns=...))")
    everything = message(lambda: datasets.read_source(str(path)))
    assert "no column 'observations', 'actions', 'rewards', 'terminals' (columns: " in everything
    assert ("map them with make_dataset.columns = {'observations': ['obs_0', 'obs_1'], 'actions': 'act_0', "
            "'rewards': 'reward', 'terminals': 'done'}") in everything
    assert message(lambda: datasets.read_source(str(path), columns={**mapped, "timeouts": "timeout"})) == (
        f"{path}: columns['timeouts'] names column 'timeout', which the table lacks (columns: obs_0, obs_1, act_0, "
        "reward, done, timeouts); did you mean 'timeouts'?")


def test_neither_timeouts_nor_episode_ids_says_which_to_add():
    text = message(lambda: from_pandas(rows_frame(timeouts=None), name="log"))
    assert text.startswith("log: no column 'timeouts' (nor 'episode_id') (columns: observations_0, ")
    assert "timeouts: 1 on the last row of each episode that ends without terminating" in text
    assert "an episode_id column (one id per episode, its rows together) gives them" in text


def test_a_non_numeric_column_is_named(tmp_path):
    path = tmp_path / "log.csv"
    rewards = ROWS["rewards"].astype(object)
    rewards[3] = "oops"
    rows_frame(rewards=rewards).to_csv(path, index=False)
    assert message(lambda: datasets.read_source(str(path))).startswith(
        f"{path}: column 'rewards' (rewards) has dtype object, not numbers: row 3 holds 'oops'; store numbers")


def test_a_mapping_with_an_unknown_field_or_column_is_one_line():
    frame = rows_frame()
    assert "unknown field 'reward' (fields: observations, " in message(
        lambda: from_pandas(frame, columns={"reward": "rewards"}))
    assert "did you mean 'rewards'?" in message(lambda: from_pandas(frame, columns={"reward": "rewards"}))
    assert message(lambda: from_pandas(frame, columns={"rewards": "rewardz"})).startswith(
        "DataFrame: columns['rewards'] names column 'rewardz', which the table lacks (columns: ")
    assert "names 2 columns; rewards is one column" in message(
        lambda: from_pandas(frame, columns={"rewards": ["rewards", "terminals"]}))


def test_a_missing_table_package_is_one_line_with_the_pip_command(tmp_path, monkeypatch):
    path = tmp_path / "log.parquet"
    rows_frame().to_parquet(path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    assert message(lambda: datasets.read_source(str(path))) == (
        'reading .parquet tables needs pyarrow, which is not installed: pip install "iql-tf[tables]"')


def test_importing_the_data_package_imports_neither_tensorflow_nor_pandas():
    code = ("import sys, iql_tf.data; iql_tf.data.from_arrays; "
            "print(sorted({'tensorflow', 'pandas'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_an_in_memory_source_converts_and_loads_back_as_given(tmp_path):
    source = from_arrays(**ROWS, name="tiny log")
    metadata = conversion.convert(sources.resolve(source), tmp_path / "out")
    tensors, loaded = load_converted(tmp_path / "out")
    for key in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(tensors[key].numpy(), ROWS[key].astype(np.float32), err_msg=key)
    np.testing.assert_array_equal(np.flatnonzero(tensors["dones"].numpy()), [3, 8, 11])
    assert loaded == metadata and metadata.source == "tiny log"
    unnamed = from_arrays(**ROWS)
    assert sources.resolve(unnamed).name == f"arrays-{unnamed.digest[:12]}"


def test_the_digest_is_of_the_content():
    source = from_arrays(**ROWS)
    as_float64 = {key: value.astype(np.float64) if value.dtype == np.float32 else value for key, value in ROWS.items()}
    assert from_arrays(**as_float64).digest == source.digest  # the same numbers
    assert sources.identity(sources.resolve(source)) == source.digest
    changed = dict(ROWS, rewards=ROWS["rewards"] + np.eye(12, dtype=np.float32)[5])
    assert from_arrays(**changed).digest != source.digest
    assert from_arrays(**ROWS, env_id="Pendulum-v1").digest != source.digest
    assert from_arrays(**dict(ROWS, actions=ROWS["actions"][:, :1])).digest != source.digest
    # The source holds its own read-only copies: editing the caller's arrays changes nothing.
    observations = ROWS["observations"].copy()
    copied = from_arrays(**dict(ROWS, observations=observations))
    observations[0, 0] = 99.0
    assert copied.arrays["observations"][0, 0] == 0.0 and not copied.arrays["observations"].flags.writeable
    assert from_arrays(**ROWS).digest == copied.digest


def test_in_memory_problems_read_as_iql_validate_reports_them(write_npz):
    rewards = ROWS["rewards"].copy()
    rewards[5] = np.nan
    broken = dict(ROWS, rewards=rewards, actions=ROWS["actions"][:, 0])
    from_file = inspection.validate(str(write_npz(**broken)))["problems"]
    in_memory = inspection.validate(from_arrays(**broken, name="mine"))["problems"]
    assert len(in_memory) == 2 and in_memory == [line.replace(str(write_npz(**broken)), "mine") for line in from_file]


def test_in_memory_settings_count_as_given():
    source = from_arrays(**dict(ROWS, actions=ROWS["actions"] * 2), action_bounds=(-2, 2))
    assert datasets.read_source(source).action_high.tolist() == [2.0, 2.0]
    assert datasets.read_source(source, action_bounds=(-2.0, 2.0)).action_low.tolist() == [-2.0, -2.0]
    assert "action_bounds=[-3, 3] given, but the in-memory source has action_bounds=[-2, 2]" in message(
        lambda: datasets.read_source(source, action_bounds=(-3, 3)))
    unbounded = from_arrays(**dict(ROWS, actions=ROWS["actions"] * 2))
    assert "field 'actions' row 0 has value -2 outside [-1, 1]" in message(lambda: datasets.read_source(unbounded))


def test_a_tf_dataset_reads_like_its_arrays():
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(ROWS)
    assert from_tf_dataset(dataset).digest == from_arrays(**ROWS).digest
    assert from_tf_dataset(dataset.repeat(), max_rows=12).digest == from_arrays(**ROWS).digest
    assert "repeats forever; pass max_rows" in message(lambda: from_tf_dataset(dataset.repeat()))


def test_a_tf_dataset_lacking_a_key_or_changing_shape_is_refused():
    import tensorflow as tf

    renamed = {("reward" if key == "rewards" else key): value for key, value in ROWS.items()}
    assert message(lambda: from_tf_dataset(tf.data.Dataset.from_tensor_slices(renamed))).startswith(
        "tf.data.Dataset: element 0 has no key 'rewards' (its keys: ")
    assert "did you mean 'reward'?" in message(lambda: from_tf_dataset(tf.data.Dataset.from_tensor_slices(renamed)))

    def steps():
        for row in range(3):
            yield {"observations": np.zeros(3 + (row == 2), np.float32), "actions": np.zeros(1, np.float32),
                   "rewards": np.float32(1), "terminals": False, "timeouts": row == 2}

    signature = {"observations": tf.TensorSpec((None,), tf.float32), "actions": tf.TensorSpec((1,), tf.float32),
                 "rewards": tf.TensorSpec((), tf.float32), "terminals": tf.TensorSpec((), tf.bool),
                 "timeouts": tf.TensorSpec((), tf.bool)}
    ragged = tf.data.Dataset.from_generator(steps, output_signature=signature)
    assert message(lambda: from_tf_dataset(ragged, name="steps")).startswith(
        "steps: element 2 has 'observations' of shape [4], element 0 of [3]; every element is one transition")

    def lacking():  # element 10 lacks a key the signature promises
        for row in range(12):
            yield {key: value[row % 12] for key, value in ROWS.items() if row != 10 or key != "rewards"}

    fixed = {key: tf.TensorSpec(np.shape(value)[1:], tf.as_dtype(np.asarray(value).dtype)) for key, value in ROWS.items()}
    broken = tf.data.Dataset.from_generator(lacking, output_signature=fixed)
    assert message(lambda: from_tf_dataset(broken, name="log")).startswith("log: element 10 cannot be read (")
