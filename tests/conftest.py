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
