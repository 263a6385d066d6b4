"""iql-tf: Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022) in TensorFlow 2 / Keras."""

__version__ = "0.1.0"
