"""iql-tf: Implicit Q-Learning in TensorFlow 2 / Keras."""

import pathlib

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in pathlib.Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

setup(
    name="iql-tf",
    version="0.1.0",
    description="Implicit Q-Learning (IQL) for offline RL in TensorFlow 2 / Keras",
    packages=find_packages(include=["iql_tf", "iql_tf.*"]),
    python_requires=">=3.10",
    install_requires=requirements,
    extras_require={"test": ["pytest==9.2.0"]},
)
