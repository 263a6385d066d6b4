"""Data streamed through tf.data: every row once per epoch, the preprocessing of the in-memory path, the
automatic choice by memory budget, exact resume through the checkpointed iterator, damage and refusals."""

import json
import logging
import pathlib

import gin
import numpy as np
import pytest
import tensorflow as tf

from iql_tf import config
from iql_tf.data import shards
from iql_tf.data.metadata import load_metadata
from iql_tf.data.pipeline import make_dataset
from iql_tf.data.streaming import StreamedBatches
from iql_tf.errors import UserError
from iql_tf.settings import DataSettings
from iql_tf.trainer import run_training


@pytest.fixture
def streaming_bindings(hopper_npz, tmp_path):
    return [f"make_dataset.source = '{hopper_npz}'", f"make_dataset.cache_dir = '{tmp_path / 'cache'}'",
            "make_dataset.streaming = True", "make_dataset.shuffle_buffer = 500",
            "IQLAgent.hidden_dims = (8, 8)", "IQLAgent.batch_size = 16", "IQLAgent.jit_compile = False",
            "IQLAgent.actor_cosine_decay = False",  # so that a run may be resumed to train for longer
            "train.eval_episodes = 0", "train.progress_bar = False", "train.checkpoint_interval = 10",
            "train.steps_per_call = 10"]


def parse(bindings, *extra):
    gin.clear_config()
    config.parse_gin(["locomotion"], list(bindings) + list(extra))


def checkpoint_values(workdir: pathlib.Path, step: int):
    reader = tf.train.load_checkpoint(str(workdir / "checkpoints" / f"ckpt-{step}"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("agent/")}


def test_a_stream_yields_every_row_once_per_epoch_prepared_as_in_memory(write_npz, tmp_path):
    settings = DataSettings(str(write_npz()), cache_dir=str(tmp_path), reward_preprocessing="antmaze",
                            normalize_observations=True, action_bounds=(-2.0, 2.0))
    in_memory = make_dataset(dataclasses_replace(settings, streaming=False))
    streamed = make_dataset(dataclasses_replace(settings, streaming=True))
    assert streamed.tensors is None and streamed.directory == in_memory.directory  # never read into memory
    batches = StreamedBatches(streamed.directory, streamed.metadata, streamed.preprocessing, members=2,
                              batch_size=3, shuffle_buffer=100, seed=0)
    assert batches.available() == 100  # a group of batches fetched
    epoch = [batches.sample([]) for _ in range(2)]  # 2 batches x 2 members x 3 rows = the 12 rows
    assert epoch[0]["observations"].shape == (2, 3, 3)
    rows = {key: np.concatenate([batch[key].numpy().reshape(12 // 2, *batch[key].shape[2:]) for batch in epoch])
            for key in epoch[0]}
    order = np.argsort(rows["observations"][:, 0])
    expected = in_memory.tensors
    np.testing.assert_allclose(rows["observations"][order], expected["observations"], rtol=1e-5)
    np.testing.assert_allclose(rows["actions"][order], expected["actions"], rtol=1e-6)
    np.testing.assert_allclose(rows["rewards"][order], expected["rewards"])
    np.testing.assert_array_equal(rows["masks"][order], 1.0 - expected["terminals"])
    # The next epoch is another order of the same rows.
    again = np.concatenate([batches.sample([])["rewards"].numpy().ravel() for _ in range(2)])
    assert sorted(again) == sorted(rows["rewards"]) and not np.array_equal(again, rows["rewards"])


def dataclasses_replace(settings, **changes):
    import dataclasses

    return dataclasses.replace(settings, **changes)


def test_the_automatic_choice_streams_what_exceeds_the_memory_budget(write_npz, tmp_path, caplog):
    settings = DataSettings(str(write_npz()), cache_dir=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="absl"):
        assert make_dataset(dataclasses_replace(settings, memory_budget_gb=1e-9)).tensors is None
        assert make_dataset(settings).tensors is not None  # a quarter of this machine's memory: held
    assert "streamed through tf.data" in caplog.text and "a quarter of this machine's memory" in caplog.text


def test_a_streamed_run_resumes_to_the_weights_of_an_uninterrupted_one(streaming_bindings, tmp_path):
    parse(streaming_bindings, "train.num_offline_steps = 40")
    run_training(tmp_path / "straight")
    parse(streaming_bindings, "train.num_offline_steps = 20")
    run_training(tmp_path / "resumed")  # stops at 20 with a checkpoint; the stream's position is in it
    parse(streaming_bindings, "train.num_offline_steps = 40")
    run_training(tmp_path / "resumed")
    straight, resumed = checkpoint_values(tmp_path / "straight", 40), checkpoint_values(tmp_path / "resumed", 40)
    assert straight.keys() == resumed.keys() and len(straight) > 20
    for name, value in straight.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    # Held in memory instead, the same run trains on other batches: a resume may not switch between them.
    parse(streaming_bindings, "train.num_offline_steps = 50", "make_dataset.streaming = False")
    with pytest.raises(UserError, match=r"trained with other settings .*sampling"):
        run_training(tmp_path / "resumed")


def test_a_damaged_shard_and_fine_tuning_a_stream_are_refused_in_one_line(streaming_bindings, tmp_path):
    parse(streaming_bindings, "train.num_offline_steps = 10")
    run_training(tmp_path / "run")
    (shard,) = (tmp_path / "cache").glob("*/shard-*.tfrecord")
    content = bytearray(shard.read_bytes())
    content[len(content) // 2] ^= 0xFF
    shard.write_bytes(bytes(content))
    parse(streaming_bindings, "train.num_offline_steps = 10", f"make_dataset.source = '{shard.parent}'")
    with pytest.raises(UserError, match=rf"{shard}: sha256 does not match"):
        run_training(tmp_path / "damaged")
    parse(streaming_bindings, "train.num_offline_steps = 10", "train.num_online_steps = 10",
          "make_dataset.env_id = 'Hopper-v5'", "train.eval_episodes = 1")
    with pytest.raises(UserError, match=r"make_dataset.streaming with train.num_online_steps"):
        run_training(tmp_path / "online")


def test_shards_that_disagree_with_metadata_or_break_while_read_are_one_line(write_npz, tmp_path, monkeypatch):
    converted = make_dataset(DataSettings(str(write_npz()), cache_dir=str(tmp_path), streaming=True))
    directory = pathlib.Path(converted.directory)

    def stream():
        return StreamedBatches(directory, load_metadata(directory), converted.preprocessing, members=1, batch_size=4,
                               shuffle_buffer=12, seed=0)

    # metadata.json counts other transitions than its (intact) shard holds: refused as the in-memory path does.
    fields = json.loads((directory / "metadata.json").read_text())
    fields["num_transitions"] = fields["shards"][0]["num_transitions"] = 11
    fields["num_episodes"] = 3
    (directory / "metadata.json").write_text(json.dumps(fields))
    with pytest.raises(UserError, match=r"shard-00000-of-00001.tfrecord: holds 12 transitions but metadata.json says "
                                        r"11; re-run the conversion"):
        stream()
    fields["num_transitions"] = fields["shards"][0]["num_transitions"] = 12
    (directory / "metadata.json").write_text(json.dumps(fields))
    # A shard damaged after the start's checks (here: the checks see it intact) stops the run in one line.
    (shard,) = directory.glob("shard-*.tfrecord")
    content = bytearray(shard.read_bytes())
    content[len(content) // 2] ^= 0xFF
    shard.write_bytes(bytes(content))
    monkeypatch.setattr(shards, "verified_paths", lambda directory, metadata, fix: [str(shard)])
    monkeypatch.setattr(shards, "check_counts", lambda *args: None)
    with pytest.raises(UserError, match=rf"^{directory}: a shard could not be read while training \(.+\); it changed "
                                        "after the run started: .* re-run the same command to resume"):
        stream().available()


def test_a_cache_and_a_converted_directory_on_a_gfile_filesystem(write_npz, tmp_path):
    # file:// goes through tf.io.gfile as gs:// would: the same code path, on a local folder.
    cache = f"file://{tmp_path / 'cache'}"
    converted = make_dataset(DataSettings(str(write_npz()), cache_dir=cache))  # converted here, then uploaded
    assert converted.directory.startswith(cache) and len(list((tmp_path / "cache").glob("*/metadata.json"))) == 1
    again = make_dataset(DataSettings(converted.directory))  # the URI itself, read through gfile
    for key, value in converted.tensors.items():
        np.testing.assert_array_equal(again.tensors[key], value)
    streamed = make_dataset(DataSettings(converted.directory, streaming=True))
    batches = StreamedBatches(streamed.directory, streamed.metadata, streamed.preprocessing, members=1, batch_size=4,
                              shuffle_buffer=12, seed=0)
    assert batches.available() == 100 and batches.sample([])["rewards"].shape == (1, 4)
    with pytest.raises(UserError, match=r"no metadata.json there; a URI names a converted dataset directory"):
        make_dataset(DataSettings(f"file://{tmp_path / 'nothing'}"))
