"""The data side of iql-tf (docs/data.md): sources, their validation and conversion to TFRecord shards, and the
dataset the trainer reads. In-memory sources are made here: `from_arrays`, `from_pandas`, `from_tf_dataset`
(importing this package imports neither TensorFlow nor pandas)."""

from iql_tf.data.in_memory import InMemorySource, from_arrays, from_pandas, from_tf_dataset

__all__ = ["InMemorySource", "from_arrays", "from_pandas", "from_tf_dataset"]
