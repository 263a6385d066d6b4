"""iql-tf: Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022) in TensorFlow 2 / Keras."""

import os

# Before anything imports TensorFlow: hide its C++ INFO lines (oneDNN and CUDA probing notices on
# every start); its warnings and errors still show. An explicit setting by the user wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.2.0"
