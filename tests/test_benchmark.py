"""The benchmark's harness on tiny networks (speed itself is the benchmark's business, never a test's): the
requested rows are there, ratios are to each group's first row, and the table renders."""

from iql_tf.tools.benchmark import __main__ as benchmark


def test_rows_and_ratios_to_each_groups_first_row():
    rows = benchmark.run_benchmark(shapes=["hopper"], hidden=[8], batch_size=16, fused=5, rounds=1, seconds=0.01,
                                   frameworks=["iql_tf"], loop_updates=0, loop_transitions=0, ensembles=[],
                                   online=False, serving_calls=0)
    assert [row.name for row in rows] == [
        "iql-tf XLA, 5 fused updates per call", "iql-tf XLA, one update per call",
        "iql-tf TF kernels, 5 fused updates per call", "iql-tf TF kernels, one update per call"]
    for group in {row.group for row in rows}:
        first, *others = [row for row in rows if row.group == group]
        assert first.baseline and first.ratio == 1.0
        assert all(abs(row.ratio - row.value / first.value) < 1e-9 and row.value > 0 for row in others)
    assert "| iql-tf XLA, one update per call |" in benchmark.markdown(rows, "header")
