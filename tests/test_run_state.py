"""What a run's checkpoints record, and the comparison that decides whether a resume may go on."""

import json

import pytest

from iql_tf import run_files
from iql_tf.checkpoints import Checkpoints
from iql_tf.errors import UserError
from iql_tf.run_state import RunState


def record(dataset_content, seed=0, log_interval=1000):
    return {"training": {"dataset": "d.npz", "dataset_content": dataset_content, "seed": seed},
            "other": {"log_interval": log_interval}, "policy": {}}


def check(tmp_path, recorded, current):
    files = run_files.RunFiles(tmp_path)
    RunState(files, Checkpoints(files.checkpoints), {})._check_same_training(recorded, current, step=20)
    return json.loads((tmp_path / run_files.RESUMES).read_text()) if (tmp_path / run_files.RESUMES).exists() else []


def test_other_data_or_training_settings_are_refused_and_other_settings_recorded(tmp_path):
    with pytest.raises(UserError, match=r"dataset_content: 'a+' -> 'b+'"):
        check(tmp_path, record("a" * 64), record("b" * 64))
    with pytest.raises(UserError, match=r"seed: 0 -> 1"):
        check(tmp_path, record("a" * 64), record("a" * 64, seed=1))
    assert check(tmp_path, record("a" * 64), record("a" * 64, log_interval=10)) == [
        {"step": 20, "changed": {"log_interval": [1000, 10]}}]


def test_a_record_of_iql_tf_0_4_resumes_saying_its_data_identity_changed_definition(tmp_path):
    # 0.4 identified the data by a 16-digit digest of its shards' bytes; the data's own sha256 replaces it.
    assert check(tmp_path, record("c" * 16), record("d" * 64)) == [
        {"step": 20, "changed": {"dataset_content": ["c" * 16, "d" * 64]}}]
    with pytest.raises(UserError, match=r"dataset_content"):  # but never the other way round
        check(tmp_path, record("d" * 64), record("c" * 16))
