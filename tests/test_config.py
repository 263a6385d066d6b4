"""Packaged gin configs: found by name from any directory, inside the wheel, and the command lines' help."""

import subprocess
import sys
import zipfile

import gin
import pytest
from conftest import REPO_ROOT

from iql_tf import config
from iql_tf.errors import UserError


@pytest.mark.parametrize("name", ["locomotion", "locomotion.gin", "gin/locomotion.gin"])
def test_packaged_configs_resolve_by_name_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The suite runs in an editable install (the README's command): the configs are the checkout's gin/.
    assert config.configs_dir() == REPO_ROOT / "gin"
    assert config.resolve_gin_file(name) == str(REPO_ROOT / "gin" / "locomotion.gin")
    config.parse_gin([name], [])
    assert gin.query_parameter("IQLAgent.expectile") == 0.7
    assert gin.query_parameter("IQLAgent.hidden_dims") == (256, 256)  # from the included base.gin


def test_a_gin_file_given_by_path_can_include_the_packaged_base(tmp_path):
    own = tmp_path / "mine.gin"
    own.write_text("include 'base.gin'\nIQLAgent.expectile = 0.8\n")
    config.parse_gin([str(own)], [])
    assert gin.query_parameter("IQLAgent.expectile") == 0.8 and gin.query_parameter("IQLAgent.batch_size") == 256


def test_a_missing_gin_file_lists_the_packaged_ones():
    with pytest.raises(UserError, match=r"gin file 'nope' not found .*packaged configs: .*antmaze.*locomotion"):
        config.parse_gin(["nope"], [])


def test_a_mistyped_path_is_an_error_not_the_packaged_config_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"gin file 'my/typo/locomotion.gin' not found; check the path"):
        config.parse_gin(["my/typo/locomotion.gin"], [])
    own = tmp_path / "my" / "locomotion.gin"  # a real file of a packaged config's name is read as given
    own.parent.mkdir()
    own.write_text("IQLAgent.expectile = 0.55\n")
    config.parse_gin(["my/locomotion.gin"], [])
    assert gin.query_parameter("IQLAgent.expectile") == 0.55


def test_the_wheel_carries_the_configs_and_no_top_level_tools(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("iql_tf-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "installed")
    assert {f"iql_tf/configs/{path.name}" for path in (REPO_ROOT / "gin").glob("*.gin")} <= set(names)
    assert {name.split("/")[0] for name in names} <= {"iql_tf", wheel.name.rsplit("-", 3)[0] + ".dist-info"}
    # The unpacked wheel, outside this checkout, resolves the configs by name and has no `tools` package (tf2onnx
    # 1.17 puts scripts in a folder `tools` of site-packages without an __init__.py: a namespace, never ours).
    probe = ("from iql_tf import config; config.parse_gin(['locomotion'], []); import gin; "
             "print(config.configs_dir(), gin.query_parameter('IQLAgent.beta'))\n"
             "try:\n    import tools\nexcept ImportError:\n    pass\nelse:\n"
             "    if getattr(tools, '__file__', None):\n        raise SystemExit(f'tools imported from {tools.__file__}')")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(tmp_path / "installed"), "PATH": ""}, timeout=120)
    assert result.returncode == 0, result.stderr
    location, beta = result.stdout.split()
    assert location.startswith(str(tmp_path / "installed")) and beta == "3.0"


def test_command_lines_show_their_flags_without_importing_tensorflow(tmp_path):
    probe = (
        "import contextlib, io, sys\n"
        "from iql_tf import train\n"
        "from iql_tf import convert\n"
        "out = io.StringIO()\n"
        "sys.argv = ['iql-train', '--help']\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        train.run()\n"
        "    except SystemExit as exit:\n"
        "        code = exit.code\n"
        "print(code, 'tensorflow' in sys.modules)\n"
        "print(out.getvalue())\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    first, *help_text = result.stdout.splitlines()
    assert first == "0 False", result.stderr
    text = "\n".join(help_text)
    assert "--gin_file" in text and "--gin_bindings" in text and "--workdir" in text and "Train IQL" in text
