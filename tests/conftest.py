"""Shared fixtures: example datasets made here, a clean gin state, private Minari roots and caches.

Nothing outside the repository is read: the datasets the tests need are generated (tests/datasets.py), and
every run, cache and Minari root lives in pytest's temporary folders, never in the user's home.
"""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import datasets  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory):
    """The conversion cache, the compiled-path cache and the default Minari root of the whole session."""
    root = tmp_path_factory.mktemp("homes")
    saved = {name: os.environ.get(name) for name in ("IQL_TF_DATA_DIR", "IQL_TF_CACHE_DIR", "MINARI_DATASETS_PATH")}
    os.environ.update(IQL_TF_DATA_DIR=str(root / "data"), IQL_TF_CACHE_DIR=str(root / "cache"),
                      MINARI_DATASETS_PATH=str(root / "minari"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def clean_gin():
    """Every test starts and ends with no gin bindings."""
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture
def minari_root(tmp_path, monkeypatch) -> pathlib.Path:
    """A private, empty Minari root, so tests never touch ~/.minari or the network."""
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture(scope="session")
def hopper_rows():
    """2000 D4RL-style rows of Hopper-v5 with uniform random actions (see tests/datasets.py)."""
    return datasets.hopper_random_rows()


@pytest.fixture(scope="session")
def hopper_npz(hopper_rows, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("hopper") / "hopper-random.npz"
    np.savez(path, **hopper_rows)
    return path


@pytest.fixture(scope="session")
def pointmaze_root(tmp_path_factory) -> pathlib.Path:
    """A Minari root holding `pointmaze/umaze-example-v0` (4 episodes of 100 steps)."""
    root = tmp_path_factory.mktemp("pointmaze-minari")
    previous = os.environ["MINARI_DATASETS_PATH"]
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        datasets.write_pointmaze_minari("pointmaze/umaze-example-v0")
    finally:
        os.environ["MINARI_DATASETS_PATH"] = previous
    return root


def tiny_rows() -> dict:
    """D4RL-style rows of three episodes: rows 0-3 end terminal, 4-8 end by timeout, 9-11 end with the file.

    Observations are [row, 10 * row, -row]; at each episode end s' is a distinct final observation.
    """
    rows = np.arange(12, dtype=np.float32)
    observations = np.stack([rows, 10 * rows, -rows], axis=1)
    next_observations = np.stack([rows + 1, 10 * (rows + 1), -(rows + 1)], axis=1)
    next_observations[[3, 8, 11]] += 100.0  # the observation after the last step, not the next reset
    terminals = np.zeros(12, bool)
    terminals[3] = True
    timeouts = np.zeros(12, bool)
    timeouts[8] = True
    return {
        "observations": observations,
        "actions": np.linspace(-1, 1, 24, dtype=np.float32).reshape(12, 2),
        "rewards": rows * 0.5,
        "terminals": terminals,
        "timeouts": timeouts,
        "next_observations": next_observations,
    }


@pytest.fixture
def write_npz(tmp_path):
    """Writes `tiny_rows()` with fields replaced (None drops a field) to tmp_path/NAME.npz; returns the path."""

    def write(name: str = "data", **fields) -> pathlib.Path:
        arrays = {**tiny_rows(), **fields}
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
        return path

    return write
