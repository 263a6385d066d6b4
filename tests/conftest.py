"""Shared fixtures: the example datasets beside the checkout, a clean gin state, a private Minari root."""

import os
import pathlib

import gin
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_datasets() -> pathlib.Path:
    """../shared/datasets beside the checkout (CI lays a copy there), or $IQL_TF_SHARED_DATASETS."""
    path = pathlib.Path(os.environ.get("IQL_TF_SHARED_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
    if not (path / "hopper-random-example.npz").exists():
        raise FileNotFoundError(
            f"example datasets not found at {path}: set IQL_TF_SHARED_DATASETS to the shared/datasets folder"
        )
    return path


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


def tiny_rows() -> dict:
    """D4RL-style rows of three episodes: rows 0-3 end terminal, 4-8 end by timeout, 9-11 end with the file.

    Observations are [row, 10 * row, -row]; at each episode end s' is a distinct final observation.
    """
    import numpy as np

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
    import numpy as np

    def write(name: str = "data", **fields) -> pathlib.Path:
        arrays = {**tiny_rows(), **fields}
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
        return path

    return write
