"""Converter: validation errors (file, field, row; nothing left behind), shards round trip, corrupt shards."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, tiny_rows

import datasets
from iql_tf.data import conversion, shards, sources, transitions, validation
from iql_tf.data.pipeline import load_converted
from iql_tf.errors import UserError

ROWS = tiny_rows()


def convert(source, output, **kwargs):
    """The converter on a source given as the user gives it."""
    return conversion.convert(sources.resolve(str(source)), output, **kwargs)


def _with(field, row, value):
    array = ROWS[field].copy()
    array[row] = value
    return array


BROKEN = {
    "missing key": (dict(timeouts=None), r"missing field 'timeouts'"),
    "length mismatch": (dict(rewards=ROWS["rewards"][:-1]), r"field 'rewards' has shape \[11\], expected \[12\]"),
    "nan": (dict(rewards=_with("rewards", 5, np.nan)), r"field 'rewards' row 5 holds nan"),
    "inf": (dict(observations=_with("observations", 7, np.inf)), r"field 'observations' row 7 holds inf"),
    "float32 overflow": (
        dict(rewards=np.where(np.arange(12) == 2, 1e39, ROWS["rewards"].astype(np.float64))),
        r"field 'rewards' row 2 holds 1e\+39 \(non-finite as float32\)",
    ),
    "unnormalised actions": (
        dict(actions=_with("actions", 9, [3.2, 0.0])),
        r"field 'actions' row 9 has value 3.2 outside \[-1, 1\] \(by more than 0.001\); no environment gives this "
        r"dataset's action bounds",
    ),
    "string dtype": (dict(terminals=np.array(["no"] * 12)), r"field 'terminals' has dtype <U2, expected numbers"),
    "non-flag terminals": (
        dict(terminals=np.where(np.arange(12) == 4, 2, ROWS["terminals"])), r"field 'terminals' row 4 has value 2"
    ),
    "next_observations columns": (
        dict(next_observations=ROWS["next_observations"][:, :2]),
        r"field 'next_observations' has shape \[12, 2\], expected \[12, 3\]",
    ),
    "actions rank": (dict(actions=ROWS["actions"][:, 0]), r"field 'actions' has shape \[12\], expected \[12, dim\]"),
    "empty": ({key: value[:0] for key, value in ROWS.items()}, r"the dataset is empty"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_invalid_source_is_one_error_naming_file_field_row_and_leaves_nothing(case, write_npz, tmp_path):
    """The converter stops at the first problem (iql-validate lists them all)."""
    fields, message = BROKEN[case]
    path = write_npz(**fields)
    output = tmp_path / "out" / "converted"
    with pytest.raises(UserError, match=message) as error:
        convert(str(path), output)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    assert not output.exists() and not list((tmp_path / "out").glob("*"))


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, **{**ROWS, "rewards": np.array([object()] * 12)})
    with pytest.raises(UserError, match=r"objects.npz: field 'rewards' is an object array"):
        convert(str(path), tmp_path / "out")


def test_truncated_npz_is_a_user_error(write_npz, tmp_path):
    path = write_npz()
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match=r"data.npz: cannot be read as .npz"):
        convert(str(path), tmp_path / "out")


def test_round_trip_through_many_shards_and_blocks(write_npz, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "BLOCK_SIZE", 2)  # 12 transitions -> shards of 5 -> blocks of 2, 2, 1
    path = write_npz()
    metadata = convert(str(path), tmp_path / "out", shard_size=5)
    assert [s.num_transitions for s in metadata.shards] == [5, 5, 2]
    assert metadata.num_transitions == 12 and metadata.num_episodes == 3
    assert metadata.action_low == [-1.0, -1.0] and metadata.observation_high == [np.inf] * 3
    tensors, loaded = load_converted(tmp_path / "out")
    assert loaded == metadata
    expected = datasets.read_source(str(path)).transitions
    for key in transitions.TRANSITION_KEYS:
        np.testing.assert_array_equal(tensors[key].numpy(), expected[key])
    # metadata.json is strict JSON (no Infinity literals), and a dataset of vectors is written as before images
    # (format 5), so that an earlier iql-tf sharing the cache reads it.
    fields = json.loads((tmp_path / "out" / "metadata.json").read_text(), parse_constant=pytest.fail)
    assert fields["format_version"] == 5 and "observation_dtype" not in fields


def test_existing_output_is_refused(write_npz, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("user data")
    with pytest.raises(UserError, match="already exists"):
        convert(str(write_npz()), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "user data"


def test_interrupted_conversion_leaves_nothing(write_npz, tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(shards, "write_shards", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(str(write_npz()), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]


@pytest.fixture
def converted(write_npz, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "BLOCK_SIZE", 4)
    convert(str(write_npz()), tmp_path / "out", shard_size=6)
    return tmp_path / "out"


def _edit_metadata(directory, edit):
    path = directory / "metadata.json"
    fields = json.loads(path.read_text())
    edit(fields)
    path.write_text(json.dumps(fields))


def test_corrupt_shard_fails_its_checksum(converted):
    shard = converted / "shard-00001-of-00002.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"^{shard}: sha256 does not match"):
        load_converted(converted)


def test_truncated_shard_is_a_read_error_naming_the_shard(converted):
    shard = converted / "shard-00000-of-00002.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(UserError, match=rf"^{shard}: sha256 does not match"):
        load_converted(converted)
    # Even with a matching checksum (metadata edited too), TensorFlow's read error names the shard.
    from iql_tf.data.checksums import file_sha256

    _edit_metadata(converted, lambda f: f["shards"][0].update(sha256=file_sha256(shard)))
    with pytest.raises(UserError, match=rf"^{shard}: cannot be read as TFRecord"):
        load_converted(converted)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.update(num_transitions=13), r"metadata.json: field 'num_transitions' disagrees"),
        (lambda f: [f.update(num_transitions=13), f["shards"][1].update(num_transitions=7)],
         r"shard-00001-of-00002.tfrecord: holds 6 transitions but metadata.json says 7"),
        (lambda f: f.update(observation_shape=[4], observation_low=[0] * 4, observation_high=[1] * 4),
         r"field 'observations' has shape \[4, 3\] but metadata.json implies \[4, 4\]"),
        (lambda f: f.pop("env_id"), r"metadata.json: missing field 'env_id'"),
        (lambda f: f.update(format_version=99), r"field 'format_version' is 99"),
        (lambda f: [f["shards"].pop(), f.update(num_transitions=6)],
         r"shard-00001-of-00002.tfrecord: shard not listed in metadata.json"),
    ],
)
def test_metadata_that_disagrees_with_the_shards(converted, edit, message):
    _edit_metadata(converted, edit)
    with pytest.raises(UserError, match=message):
        load_converted(converted)


def test_a_dataset_converted_by_iql_tf_0_4_is_read_and_identified_by_its_shards(converted):
    tensors, metadata = load_converted(converted)
    _edit_metadata(converted, lambda f: [f.update(format_version=3), f.pop("content_sha256")])
    old_tensors, old = load_converted(converted)
    assert old.format_version == 3 and old.content_sha256 is None and len(old.content_checksum) == 16
    assert len(metadata.content_checksum) == 64 and all(np.array_equal(old_tensors[key], tensors[key]) for key in tensors)


def test_missing_shard_and_missing_metadata(converted):
    (converted / "shard-00000-of-00002.tfrecord").unlink()
    with pytest.raises(UserError, match=r"shard-00000-of-00002.tfrecord: shard listed in metadata.json is missing"):
        load_converted(converted)
    (converted / "metadata.json").write_text("{not json")
    with pytest.raises(UserError, match=r"metadata.json: not valid JSON"):
        load_converted(converted)
    (converted / "metadata.json").unlink()
    with pytest.raises(UserError, match=r"metadata.json: not found, so .* is not a converted dataset"):
        load_converted(converted)


def _cli(*args, **env):
    return subprocess.run(
        [sys.executable, "-m", "iql_tf.convert", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
    )


def test_the_summary_names_counts_shards_and_environment(hopper_npz, hopper_rows, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="absl"):
        convert(hopper_npz, tmp_path / "hopper", env_id="Hopper-v5", shard_size=500)
    episodes = int(hopper_rows["terminals"].sum() + hopper_rows["timeouts"].sum())
    assert f"2000 transitions in {episodes} trajectories, 4 shard(s)" in caplog.text and "Hopper-v5" in caplog.text


def test_the_cli_writes_the_libraries_shards_byte_for_byte_and_reports_errors_in_one_line(write_npz, tmp_path):
    # Another process orders a protobuf map otherwise, unless serialised deterministically: the same source must
    # give the same shards there too (a run records its data's identity, and a resume compares it).
    source = write_npz()
    convert(str(source), tmp_path / "here")
    converted = _cli(f"--source={source}", f"--output={tmp_path / 'there'}")
    assert converted.returncode == 0, converted.stderr[-2000:]
    here, there = (sorted(path.name for path in (tmp_path / name).iterdir()) for name in ("here", "there"))
    assert here == there and all((tmp_path / "here" / name).read_bytes() == (tmp_path / "there" / name).read_bytes()
                                 for name in here)
    bad = write_npz(actions=_with("actions", 17 % 12, [0.0, -7.0]))
    failed = _cli(f"--source={bad}", f"--output={tmp_path / 'bad'}")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    error_lines = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and error_lines[0].startswith(
        f"error: {bad}: field 'actions' row 5 has value -7 outside [-1, 1] (by more than 0.001); ")
    assert not (tmp_path / "bad").exists()


def test_the_datas_identity_is_its_arrays_not_the_bytes_of_its_shards(write_npz, tmp_path):
    source = write_npz()
    one, three = (convert(str(source), tmp_path / f"shards-of-{size}", shard_size=size) for size in (12, 4))
    assert [len(one.shards), len(three.shards)] == [1, 3] and one.content_checksum == three.content_checksum
    other = convert(str(write_npz("other", rewards=ROWS["rewards"] + 1.0)), tmp_path / "other")
    assert other.content_checksum != one.content_checksum


def test_a_converted_directory_is_not_a_source(converted, tmp_path):
    with pytest.raises(UserError, match=r"is already converted; pass it to make_dataset"):
        convert(str(converted), tmp_path / "again")
    with pytest.raises(UserError, match=r"a converted dataset, not a source to read"):
        sources.read(sources.resolve(str(converted)), validation.Report())


def test_a_directory_without_metadata_is_no_source_and_not_a_minari_id(minari_root, tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match=rf"^{tmp_path / 'folder'}: a directory without metadata.json, so not a "
                                        r"converted dataset \(nor a Minari id\)") as error:
        convert(str(tmp_path / "folder"), tmp_path / "out")
    assert "minari download" not in str(error.value)


@pytest.mark.parametrize("output", ["/proc/foo/bar", "{tmp}/data.npz/out"])
def test_an_output_that_cannot_be_created_is_a_user_error(output, write_npz, tmp_path):
    path = write_npz()
    output = output.format(tmp=tmp_path)
    with pytest.raises(UserError, match=rf"^{output}: cannot create it in {os.path.dirname(output)} \(.+\); "
                                        r"choose an --output \(make_dataset.cache_dir when training\) in a writable "
                                        r"folder$"):
        convert(str(path), output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]
