"""Your own data, start to finish: the README's walkthrough run as written, and the validate and evaluate
commands' results and mistakes."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from conftest import REPO_ROOT, tiny_rows

import datasets
from iql_tf import cli, evaluation, validate
from iql_tf.data import inspection
from iql_tf.errors import UserError


def readme_walkthrough():
    """The README's own-data section: its Python logger and its shell commands."""
    section = (REPO_ROOT / "README.md").read_text().split("<!-- own-data:begin -->")[1].split("<!-- own-data:end -->")[0]
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    return python, commands


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path):
    python, commands = readme_walkthrough()
    (tmp_path / "log_pendulum.py").write_text(python)
    environment = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs, errors = [], []
    for command in commands:
        result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, env=environment,
                                timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        # None of TensorFlow's native start-up lines reach the terminal (the export's converter notes included).
        noise = [marker for marker in ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda",
                                       "cuInit", "Ignored output_format", "Ignored drop_control") if marker in result.stderr]
        assert not noise, f"{command}\n{result.stderr[-3000:]}"
        outputs.append(result.stdout)
        errors.append(result.stderr)
    data = np.load(tmp_path / "pendulum.npz")
    assert data["observations"].shape == (5000, 3) and np.abs(data["actions"]).max() > 1.0  # Pendulum's units
    assert "pendulum.npz: no problems" in outputs[1] and "action bounds: [[-2.0], [2.0]]" in outputs[1]
    metadata = json.loads((tmp_path / "runs/pendulum/export/policy/assets/metadata.json").read_text())
    assert metadata["action_low"] == [-2.0] and metadata["env_id"] == "Pendulum-v1" and metadata["step"] == 2000
    assert re.search(r"10 episodes\n  return_mean: -\d", outputs[3])
    assert "run directory: runs/pendulum" in errors[2] and "policy exported to" in errors[2]  # its own lines stay


def test_validate_lists_every_problem_with_counts_and_first_rows(write_npz):
    rows = tiny_rows()
    rewards = rows["rewards"].copy()
    rewards[[2, 7]] = np.nan
    actions = rows["actions"].copy()
    actions[4] = [3.0, 0.0]
    terminals = rows["terminals"].astype(np.float32)
    terminals[5] = 0.5
    path = write_npz(rewards=rewards, actions=actions, terminals=terminals)
    result = inspection.validate(str(path))
    assert len(result["problems"]) == 3
    assert result["problems"][0].startswith(f"{path}: field 'rewards' row 2 holds nan") and \
        result["problems"][0].endswith("(2 rows in all: 2, 7)")
    assert "field 'terminals' row 5 has value 0.5, expected 0 or 1" in result["problems"][1]
    assert "field 'actions' row 4 has value 3 outside [-1, 1]" in result["problems"][2]
    # The converter and training stop at the first and say there are more.
    with pytest.raises(UserError, match=r"row 2 holds nan.*\(and 2 more problem\(s\): `iql-validate .*data.npz` lists"):
        datasets.read_source(str(path))


@pytest.fixture
def validate_flags():
    """The command line's flags, defined and parsed in this process, at their defaults (and left so)."""
    if "action_bounds" not in flags.FLAGS:
        validate.define_flags()
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["iql-validate"])
    yield flags.FLAGS
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["iql-validate"])


def test_validate_summarises_a_good_dataset_and_exits_0(write_npz, capsys, validate_flags):
    result = inspection.validate(str(write_npz()), action_bounds=(-2.0, 2.0))
    summary = result["summary"]
    assert result["problems"] == []
    assert (summary["transitions"], summary["trajectories"], summary["terminals"], summary["truncations"]) == (
        12, 3, 1, 2)
    assert summary["action bounds"] == [[-2.0, -2.0], [2.0, 2.0]]
    assert summary["reward min / mean / max"] == [0.0, 2.75, 5.5]
    with pytest.raises(SystemExit) as exit_status:
        cli.one_line_errors(validate.main)(["iql-validate", str(write_npz())])
    assert exit_status.value.code == 0 and "no problems" in capsys.readouterr().out


def test_validate_suggests_normalising_observations_of_very_different_scales(write_npz, capsys, validate_flags):
    rows = tiny_rows()  # observation std per dimension 3.45, 34.5, 3.45: 10x, no note
    assert inspection.validate(str(write_npz()))["notes"] == []
    for field in ("observations", "next_observations"):
        rows[field][:, 1] *= 100  # 1000x
    path = write_npz(**rows)
    with pytest.raises(SystemExit) as exit_status:
        cli.one_line_errors(validate.main)(["iql-validate", str(path)])
    output = capsys.readouterr().out
    assert exit_status.value.code == 0 and f"{path}: no problems" in output
    assert "note: observation std differs 1000x over dimensions (3.45 to 3452): set " \
           "make_dataset.normalize_observations = True" in output


def test_validate_reads_tables_with_a_column_mapping(tmp_path, capsys, validate_flags):
    import pandas as pd

    rows = tiny_rows()
    path = tmp_path / "log.csv"
    pd.DataFrame({"x": rows["observations"][:, 0], "v": rows["observations"][:, 1], "push": rows["actions"][:, 0],
                  "reward": rows["rewards"], "terminals": rows["terminals"], "timeouts": rows["timeouts"]}
                 ).to_csv(path, index=False)
    validate_flags(["iql-validate", '--columns={"observations": ["x", "v"], "actions": "push", "rewards": "reward"}'])
    with pytest.raises(SystemExit) as exit_status:
        cli.one_line_errors(validate.main)(["iql-validate", str(path)])
    output = capsys.readouterr().out
    assert exit_status.value.code == 0 and "transitions: 10" in output and "observation size: 2" in output
    validate_flags(["iql-validate", "--columns=[1]"])
    with pytest.raises(SystemExit) as exit_status:
        cli.one_line_errors(validate.main)(["iql-validate", str(path)])
    assert exit_status.value.code == 2 and capsys.readouterr().err.startswith("error: --columns: expected a JSON")


def test_validate_mistakes_are_one_line(write_npz, tmp_path, capsys, validate_flags):
    path = write_npz(actions=tiny_rows()["actions"] * 3)
    with pytest.raises(SystemExit) as exit_status:
        cli.one_line_errors(validate.main)(["iql-validate", str(path)])
    assert exit_status.value.code == 1 and "1 problem(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_status:
        cli.one_line_errors(validate.main)(["iql-validate", str(tmp_path / "missing.npz")])
    assert exit_status.value.code == 2 and capsys.readouterr().err.startswith("error: ")


def test_evaluate_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(UserError, match="no SavedModel there"):
        evaluation.evaluate_export(str(tmp_path), episodes=5)
    with pytest.raises(UserError, match="--episodes=0 must be positive"):
        evaluation.evaluate_export(str(tmp_path), episodes=0)


def test_validate_knows_the_generated_ids_without_importing_the_generators_first(minari_root, capsys,
                                                                                  validate_flags, monkeypatch):
    from iql_tf.data import generated

    monkeypatch.setattr(generated, "_GENERATORS", {})  # as in a fresh process: the command registers them itself
    with pytest.raises(SystemExit) as exit_status:
        cli.one_line_errors(validate.main)(["iql-validate", "iql_tf/pointmaze/umaze-stitch-v0"])
    assert exit_status.value.code == 2
    assert "one of the project's generated datasets, not generated yet" in capsys.readouterr().err


def test_validate_counts_goal_reaching_transitions_and_says_when_they_are_not_terminal(pointmaze_root, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pointmaze_root))
    result = inspection.validate("pointmaze/umaze-example-v0")
    episodes = list(minari.load_dataset("pointmaze/umaze-example-v0").iterate_episodes())
    reached = sum(int((episode.rewards > 0).sum()) for episode in episodes)
    terminal = sum(int(((episode.rewards > 0) & episode.terminations).sum()) for episode in episodes)
    assert reached > 0 and terminal == 0  # a continuing task: the goal is reached, nothing terminates
    assert result["summary"]["goal-reaching transitions (reward > 0) / of them terminal"] == [reached, terminal]
    assert any(note.startswith(f"{reached} of the {reached} goal-reaching transitions are not terminal")
               for note in result["notes"])
