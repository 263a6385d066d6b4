"""iql-tf: Implicit Q-Learning in TensorFlow 2 / Keras."""

import pathlib

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in pathlib.Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

SWEEP = ["ray==2.60.0", "rliable==1.2.0", "arch==7.2.0", "pandas==2.3.3"]
JAX_REFERENCE = ["jax==0.10.2", "flax==0.12.8", "optax==0.2.8"]
TABLES = ["pandas==2.3.3", "pyarrow==21.0.0"]
# OGBench's environments, loader and scripted oracles; dm_control 1.0.43 is the newest that keeps mujoco 3.10.
OGBENCH = ["ogbench==1.2.2", "dm_control==1.0.43"]
ONNX = ["onnxruntime==1.32.0"]
# rlds:DIR and tfds:NAME sources, iql-generate --rlds_dir (TFDS's reader and writer; the rlds and envlogger
# packages do not import beside TensorFlow 2.21, docs/stack.md).
RLDS = ["tensorflow-datasets==4.9.10"]

COMMANDS = {
    "iql-train": "iql_tf.train:run",
    "iql-convert": "iql_tf.convert:run",
    "iql-generate": "iql_tf.generate:run",
    "iql-validate": "iql_tf.validate:run",
    "iql-evaluate": "iql_tf.evaluate:run",
    "iql-sweep": "iql_tf.sweep:run",
    "iql-report": "iql_tf.report:run",
}

setup(
    name="iql-tf",
    version="0.5.0",
    description="Implicit Q-Learning (IQL) for offline RL in TensorFlow 2 / Keras",
    # The gin files live at the top of the repository (gin/) and install as the data package iql_tf.configs;
    # tools/ (benchmarks, toy maze, fault injection) runs from a checkout and is not installed.
    packages=[*find_packages(include=["iql_tf", "iql_tf.*"]), "iql_tf.configs"],
    package_dir={"iql_tf.configs": "gin"},
    package_data={"iql_tf.configs": ["*.gin"]},
    python_requires=">=3.10",
    install_requires=requirements,
    extras_require={
        # Sweeps on Ray and their report (rliable's bootstrap needs arch, which needs pandas < 3).
        "sweep": SWEEP,
        # .csv / .parquet datasets and iql_tf.data.from_pandas.
        "tables": TABLES,
        # ogbench:NAME sources, their evaluation environments, and iql-generate --kind=ogbench.
        "ogbench": OGBENCH,
        # Running an export's policy.onnx (iql-evaluate RUN_DIR/export/policy/policy.onnx; deployment code).
        "onnx": ONNX,
        "rlds": RLDS,
        # The test suite (two processes, pytest-xdist; it runs a small sweep; setuptools builds the wheel it
        # checks without isolation; one update is checked against the JAX reference; onnxruntime runs the exports).
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "setuptools==84.2.1",
                 *dict.fromkeys(SWEEP + TABLES + OGBENCH + ONNX + RLDS + JAX_REFERENCE)],
        # Reference implementations for python -m tools.benchmark, run from a checkout (not needed to train).
        "bench": [*JAX_REFERENCE, *ONNX, "torch==2.14.1"],
    },
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in COMMANDS.items()]},
)
