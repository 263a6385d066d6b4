"""Atomic writes: the old version survives a failed write, nothing is left behind, staging of dead writers is
swept, and a directory is replaced in one step."""

import os
import socket

import pytest

from iql_tf import files


def test_a_failed_file_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_file(path) as temporary, open(temporary, "w") as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    with files.atomic_file(path) as temporary, open(temporary, "w") as f:
        f.write("new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_directory_is_written_aside_and_replaces_the_old_one_only_when_complete(tmp_path):
    target = tmp_path / "policy"
    with files.atomic_directory(target) as staging:
        (staging / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(FileExistsError):
        with files.atomic_directory(target) as staging:
            (staging / "a").write_text("2")
    with pytest.raises(RuntimeError):
        with files.atomic_directory(target, replace=True) as staging:
            (staging / "a").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "a").read_text() == "1"
    with files.atomic_directory(target, replace=True) as staging:
        (staging / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["policy"]


def test_only_staging_left_by_dead_processes_of_this_host_is_swept(tmp_path):
    host = socket.gethostname()
    dead, alive, elsewhere = (tmp_path / f".x.partial-{owner}-abc" for owner in
                              (f"{host}-999999999", f"{host}-{os.getpid()}", "otherhost-999999999"))
    for path in (dead, alive, elsewhere):
        path.mkdir()
    (tmp_path / "ordinary").mkdir()
    assert files.sweep_stale_staging(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, elsewhere.name, "ordinary"])
