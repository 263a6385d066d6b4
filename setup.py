"""iql-tf: Implicit Q-Learning in TensorFlow 2 / Keras."""

import pathlib

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in pathlib.Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

COMMANDS = {
    "iql-train": "iql_tf.train:run",
    "iql-convert": "iql_tf.data.convert:run",
    "iql-generate": "iql_tf.generation.generate:run",
}

setup(
    name="iql-tf",
    version="0.2.0",
    description="Implicit Q-Learning (IQL) for offline RL in TensorFlow 2 / Keras",
    packages=find_packages(include=["iql_tf", "iql_tf.*"]),
    package_data={"iql_tf": ["configs/*.gin"]},
    python_requires=">=3.10",
    install_requires=requirements,
    extras_require={
        # The test suite, including the wheel-content check (setuptools builds the wheel without isolation).
        "test": ["pytest==9.2.0", "setuptools==84.2.1"],
        # Reference implementations for iql_tf.tools.benchmark (not needed to train).
        "bench": ["jax==0.10.2", "flax==0.12.8", "optax==0.2.8", "torch==2.14.1"],
    },
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in COMMANDS.items()]},
)
