"""A run's TensorBoard events, written here only: one writer per seed (in DIR itself for a run of one seed, so
that TensorBoard's run list names the run by its directory; DIR/seed_K for several), the training and online
scalars, the evaluations, and the configuration as text and HParams."""

from typing import Any, Dict, Sequence

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from iql_tf import run_files


class Summaries:
    """The TensorBoard writers of the run in `files`, one per seed of `seeds`."""

    def __init__(self, files: run_files.RunFiles, seeds: Sequence[int]):
        self.folders = [files.tensorboard_dir(seeds, member) for member in range(len(seeds))]
        self.writers = [tf.summary.create_file_writer(str(folder)) for folder in self.folders]

    def scalars(self, prefix: str, values: Dict[str, Any], step: int) -> None:
        """Each value is one number for every seed or one per seed; each seed's go to its own writer."""
        members = len(self.writers)
        for member, writer in enumerate(self.writers):
            with writer.as_default(step=step):
                for name, value in values.items():
                    per_member = np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (members,))
                    tf.summary.scalar(f"{prefix}/{name}", per_member[member])

    def evaluation(self, member: int, results: Dict[str, float], step: int) -> None:
        with self.writers[member].as_default(step=step):
            for name, value in results.items():
                tf.summary.scalar(f"eval/{name}", value)

    def configuration(self, operative_config: str, details: str, hparams: Sequence[Dict[str, Any]], step: int) -> None:
        """The gin config and the data's details as text, and each seed's HParams (what TensorBoard's HParams tab
        compares, the run's folder as its trial)."""
        for member, writer in enumerate(self.writers):
            with writer.as_default(step=step):
                tf.summary.text("config/gin", f"```\n{operative_config}\n```")
                tf.summary.text("config/data", details)
                hp.hparams(hparams[member], trial_id=str(self.folders[member]))

    def flush(self) -> None:
        for writer in self.writers:
            writer.flush()
