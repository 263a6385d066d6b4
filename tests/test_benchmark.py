"""The benchmarks' harnesses on tiny networks and data (speed itself is the benchmark's business, never a test's): the
requested rows are there, ratios are to each group's first row, and the table renders."""

import pytest

from iql_tf import fastest_path
from iql_tf.errors import UserError
from tools import benchmark_data
from tools.benchmark import __main__ as benchmark


def test_rows_and_ratios_to_each_groups_first_row(monkeypatch):
    rows = benchmark.run_benchmark(shapes=["hopper"], hidden=[8], batch_size=16, fused=5, rounds=1, seconds=0.01,
                                   frameworks=["iql_tf"], loop_updates=0, loop_transitions=0, ensembles=[],
                                   online=False, serving_calls=0, fqe=False)
    assert [row.name for row in rows] == [
        "iql-tf XLA, 5 fused updates per call", "iql-tf XLA, one update per call",
        "iql-tf TF kernels, 5 fused updates per call", "iql-tf TF kernels, one update per call"]
    assert all(row.value > 0 for row in rows)  # really timed
    # Ratios are to the group's first row: with rates of 100, 50, 25 and 20 updates/s, 1, 0.5, 0.25 and 0.2.
    monkeypatch.setattr(fastest_path, "race", lambda calls, rounds, seconds: dict(zip(calls, [100.0, 50.0, 25.0, 20.0])))
    rows = benchmark.run_benchmark(shapes=["hopper"], hidden=[8], batch_size=16, fused=5, rounds=1, seconds=0.01,
                                   frameworks=["iql_tf"], loop_updates=0, loop_transitions=0, ensembles=[],
                                   online=False, serving_calls=0, fqe=True)
    assert [row.ratio for row in rows[:4]] == [1.0, 0.5, 0.25, 0.2] and rows[0].baseline
    # FQE's group: its own first row (IQL's update) is its baseline.
    assert [row.name for row in rows[4:]] == [
        "XLA: IQL update, 5 fused per call", "XLA: FQE update, 5 fused per call",
        "TF kernels: IQL update, 5 fused per call", "TF kernels: FQE update, 5 fused per call"]
    assert [row.ratio for row in rows[4:]] == [1.0, 0.5, 0.25, 0.2] and rows[4].baseline
    assert "| iql-tf XLA, one update per call | 50.0 updates/s | 0.50x |" in benchmark.markdown(rows, "header")


def test_the_many_seeds_flag_reads_sizes_and_seed_counts():
    assert benchmark._ensemble("256x256:10") == ((256, 256), 10)
    with pytest.raises(UserError, match=r"--ensembles entry '64,64:8': expected SIZExSIZE:SEEDS"):
        benchmark._ensemble("64,64:8")


def test_the_data_benchmark_converts_and_loads():
    rows = benchmark_data.measure(num_transitions=3000, repeats=1)
    assert [name for name, _ in rows] == ["convert (npz -> shards)", "load_converted (verify + read)",
                                          "make_dataset (+ clip, locomotion)"]
    assert all(len(times) == 1 and times[0] > 0 for _, times in rows)
