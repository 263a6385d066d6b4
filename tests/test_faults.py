"""Faults injected into real (tiny) runs: a damaged index or checkpoint, two writers, interrupted writes,
kill -9 at random moments. Each is survived without losing a completed checkpoint, or refused in one line."""

import logging
import os
import random
import shutil
import socket

import gin
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_rows

from iql_tf import config
from iql_tf.errors import UserError
from iql_tf.checkpoints import Checkpoints
from iql_tf.run_files import RunFiles
from tools import fault_injection
from iql_tf.trainer import run_training


def tiny_trainer(folder):
    """Trains (or resumes) a run to `steps` updates with a checkpoint every 10 in folder/run."""
    np.savez(folder / "data.npz", **tiny_rows())
    bindings = [f"make_dataset.source = '{folder / 'data.npz'}'", f"make_dataset.cache_dir = '{folder / 'cache'}'",
                "IQLAgent.hidden_dims = (8,)", "IQLAgent.batch_size = 4", "IQLAgent.jit_compile = False",
                "IQLAgent.actor_cosine_decay = False",  # so that a run may be resumed to train for longer
                "train.checkpoint_interval = 10", "train.checkpoints_to_keep = 3", "train.progress_bar = False"]

    def train(steps=40, *extra):
        gin.clear_config()
        config.parse_gin(["quickstart"], bindings + [f"train.num_offline_steps = {steps}", *extra])
        return run_training(str(folder / "run"))

    return train


@pytest.fixture
def tiny(tmp_path):
    return tiny_trainer(tmp_path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run of 20 updates, finished once for the tests that only read its records (copy it before writing)."""
    folder = tmp_path_factory.mktemp("finished")
    tiny_trainer(folder)(20)
    gin.clear_config()
    return folder / "run"


def steps_present(tmp_path):
    return Checkpoints(tmp_path / "run" / "checkpoints").steps()


def test_a_missing_or_garbled_index_resumes_from_the_newest_checkpoint_and_deletes_nothing(tiny, tmp_path):
    tiny(30)
    index = tmp_path / "run" / "checkpoints" / "checkpoint"
    for damage in (lambda: index.write_text("model_checkpoint_path: garbage\x00\xff"), index.unlink):
        damage()
        tiny(30, "train.eval_interval = 7")  # nothing to train: it must find step 30, not start over
        assert steps_present(tmp_path) == [30, 20, 10]
    tiny(40)
    assert steps_present(tmp_path) == [40, 30, 20]


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tiny, tmp_path, damage, caplog):
    tiny(30)
    data = next((tmp_path / "run" / "checkpoints").glob("ckpt-30.data-*"))
    content = bytearray(data.read_bytes())
    if damage == "truncate":
        content = content[: len(content) // 2]
    elif damage == "empty":
        content = bytearray()
    else:
        content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))
    with caplog.at_level(logging.WARNING):
        tiny(40)
    assert f"resuming from {tmp_path / 'run' / 'checkpoints' / 'ckpt-20'}: the newer ckpt-30 is damaged (" in caplog.text
    assert steps_present(tmp_path) == [40, 30, 20]  # the damaged one was redone


def test_no_intact_checkpoint_is_refused_unless_starting_over_is_asked(tiny, tmp_path):
    tiny(20)
    for data in (tmp_path / "run" / "checkpoints").glob("ckpt-*.data-*"):
        data.write_bytes(b"")
    with pytest.raises(UserError, match=r"no intact checkpoint \(ckpt-20 is damaged .*ckpt-10 is damaged .*\); "
                                        r"move the folder aside .* train.start_over = True"):
        tiny(20)
    assert steps_present(tmp_path) == [20, 10]  # nothing deleted
    tiny(20, "train.start_over = True")
    assert steps_present(tmp_path) == [20, 10]
    assert all(tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints" / f"ckpt-{s}")) for s in (10, 20))


def test_a_second_writer_is_refused_at_once_naming_the_holder(tiny, tmp_path):
    with RunFiles(tmp_path / "run").lock():
        with pytest.raises(UserError, match=rf"--workdir {tmp_path / 'run'} is in use by pid {os.getpid()} on "
                                            rf"{socket.gethostname()}; wait for that run to finish"):
            tiny(10)
    tiny(10)  # released: the lock of a finished (or killed) holder never blocks


def test_staging_folders_of_interrupted_writes_are_swept_on_the_next_start(tiny, tmp_path):
    tiny(10)
    dead = f"{socket.gethostname()}-999999999-abc"
    export_stale = tmp_path / "run" / "export" / f".policy.partial-{dead}"
    run_stale = tmp_path / "run" / f".eval_results.json.partial-{dead}"
    alive = tmp_path / "run" / "export" / f".policy.partial-{socket.gethostname()}-{os.getpid()}-abc"
    for path in (export_stale, alive):
        path.mkdir(parents=True)
    run_stale.write_text("half")
    tiny(20)
    assert not export_stale.exists() and not run_stale.exists()
    assert alive.exists()  # a live process's staging folder is left alone
    assert sorted(p.name for p in (tmp_path / "run" / "export").iterdir() if p != alive) == ["policy"]


def test_kill_9_at_random_moments_loses_nothing(tmp_path):
    # The fault-injection tool on a run small enough for the test suite.
    bindings = fault_injection.default_bindings(tmp_path) + ["train.num_offline_steps = 600",
                                                       "train.checkpoint_interval = 100"]
    report = fault_injection.inject(tmp_path, bindings, kills=2, rng=random.Random(0))
    assert report == {"kills": 2, "max_weight_difference": 0.0, "checkpoints_lost": 0, "same_variables": True}
    assert fault_injection.final_weights(tmp_path / "interrupted")  # a real checkpoint was compared
    np.testing.assert_array_equal(
        fault_injection.final_weights(tmp_path / "interrupted")["agent/step/.ATTRIBUTES/VARIABLE_VALUE"], 600)


@pytest.mark.parametrize("name, content", [
    ("resumes.json", "{not json"), ("resumes.json", '{"step": 1}'),
    ("eval_results.json", "[{"), ("eval_results.json", '[{"seed": 0}]'),
    ("finished.json", "nul"), ("finished.json", '{"step": 40}'), ("sweep_run.json", "[1, 2]"),
])
def test_a_garbled_run_record_is_one_line_naming_the_file(finished_run, tmp_path, name, content):
    shutil.copytree(finished_run, tmp_path / "run")
    (tmp_path / "run" / name).write_text(content)
    files = RunFiles(tmp_path / "run")
    reader = {"resumes.json": lambda: files.record_resume(1, {}), "eval_results.json": files.results,
              "finished.json": files.finished, "sweep_run.json": files.sweep_run}[name]
    with pytest.raises(UserError) as error:
        reader()
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "run" / name)), message
    assert (tmp_path / "run" / name).read_text() == content  # nothing overwritten


def test_outputs_without_checkpoints_are_not_overwritten_by_a_fresh_start(tiny, tmp_path):
    tiny(20)
    finished = (tmp_path / "run" / "finished.json").read_text()
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    with pytest.raises(UserError, match=r"holds the outputs of an earlier run \(finished.json, export\) but no "
                                        r"checkpoint .* train.start_over = True"):
        tiny(20)
    assert (tmp_path / "run" / "finished.json").read_text() == finished
    tiny(20, "train.start_over = True")
    assert steps_present(tmp_path) == [20, 10]


def test_a_full_disk_and_a_read_error_are_one_line_and_delete_nothing(tiny, tmp_path, monkeypatch):
    tiny(20)
    write = tf.train.Checkpoint.write

    def full(self, prefix, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}.data-00000-of-00001; No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "write", full)
    with pytest.raises(UserError, match=r"ckpt-30: the checkpoint could not be written \(.*No space left.*\); free "
                                        r"space under .*older checkpoints are kept"):
        tiny(30)

    def read_only(self, prefix, *args, **kwargs):  # a checkpoints/ folder made read-only (root ignores chmod)
        raise tf.errors.PermissionDeniedError(None, None, f"{prefix}_temp; Permission denied")

    monkeypatch.setattr(tf.train.Checkpoint, "write", read_only)
    with pytest.raises(UserError, match=r"ckpt-30: the checkpoint could not be written \(.*Permission denied\); "
                                        r"free space under .* \(or make it writable\) .*older checkpoints are kept"):
        tiny(30)
    monkeypatch.setattr(tf.train.Checkpoint, "write", write)
    assert steps_present(tmp_path) == [20, 10]
    # A read error that says nothing of the files (permissions, a filesystem's hiccup) is not damage: it stops
    # the run, and the next save cannot prune a good checkpoint because of it.
    load = tf.train.load_checkpoint

    def denied(prefix):
        raise tf.errors.PermissionDeniedError(None, None, f"{prefix}.index; Permission denied")

    monkeypatch.setattr(tf.train, "load_checkpoint", denied)
    with pytest.raises(UserError, match=r"ckpt-20: cannot read the checkpoint \(.*Permission denied\), which says "
                                        r"nothing of its files.*no checkpoint was deleted"):
        tiny(30)
    monkeypatch.setattr(tf.train, "load_checkpoint", load)
    assert steps_present(tmp_path) == [20, 10]


def test_staging_of_killed_checkpoint_writes_and_conversions_is_swept(tiny, tmp_path, write_npz):
    tiny(10)
    temporary = tmp_path / "run" / "checkpoints" / "ckpt-20_temp"
    (temporary / "part-00000-of-00001").mkdir(parents=True)
    tiny(20)
    assert not temporary.exists() and steps_present(tmp_path) == [20, 10]
    from iql_tf.data import conversion, sources

    stale = tmp_path / "out" / f".converted.partial-{socket.gethostname()}-999999999-abc"
    stale.mkdir(parents=True)
    conversion.convert(sources.resolve(str(write_npz())), tmp_path / "out" / "converted")
    assert not stale.exists() and (tmp_path / "out" / "converted" / "metadata.json").is_file()


def test_atomic_writes_are_synced_before_the_rename(tmp_path, monkeypatch):
    from iql_tf import files

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda descriptor: synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
                        or real(descriptor))
    files.write_text(tmp_path / "record.json", "{}")
    assert any(".record.json.partial-" in path for path in synced)  # the content, before it is renamed
    assert str(tmp_path) in synced  # then the folder holding the new name
    synced.clear()
    with files.atomic_directory(tmp_path / "export") as staging:
        (staging / "saved_model.pb").write_bytes(b"x")
    assert any(path.endswith("saved_model.pb") for path in synced) and str(tmp_path) in synced


@pytest.mark.parametrize("record", ["eval_results.json", "resumes.json"])
def test_a_garbled_record_stops_a_resume_before_any_update(tiny, tmp_path, record):
    tiny(10)
    (tmp_path / "run" / record).write_text('[{"step": 10, "seed"')  # cut short
    with pytest.raises(UserError, match=rf"^{tmp_path / 'run' / record} is damaged: not valid JSON"):
        tiny(20)
    assert steps_present(tmp_path) == [10]  # nothing trained, nothing lost
