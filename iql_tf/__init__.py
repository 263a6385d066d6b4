"""iql-tf: Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022) in TensorFlow 2 / Keras."""

import os

# Before anything imports TensorFlow: hide its C++ INFO lines (oneDNN and CUDA probing notices on
# every start); its warnings and errors still show. An explicit setting by the user wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.5.0"


def __getattr__(name: str):
    """`iql_tf.IQL` and `iql_tf.data` on first use, so that importing iql_tf (and every command's --help)
    stays free of TensorFlow."""
    import importlib

    if name == "IQL":
        return importlib.import_module("iql_tf.api").IQL
    if name == "data":
        return importlib.import_module("iql_tf.data")
    raise AttributeError(f"module 'iql_tf' has no attribute {name!r}")
