"""An exported policy loaded as a `Policy`, for `iql-evaluate` and `iql-generate --kind=policy`: its metadata
read, its files and ops checked (`checks.py`), then its `serving_default` signature loaded with TensorFlow."""

import pathlib
from typing import Tuple

from iql_tf.errors import UserError, first_line
from iql_tf.policy import Policy
from iql_tf.policy.checks import check_export
from iql_tf.policy.metadata import PolicyMetadata, read_policy_metadata


def load_policy(directory: "str | pathlib.Path", trust: bool = False) -> Tuple[Policy, PolicyMetadata]:
    """The deterministic policy of an exported SavedModel (`serving_default`) and its metadata.

    Anything that is not an export is a UserError saying what to pass instead; a damaged export, or one that
    would run ops iql-tf's exports never use (unless `trust`), is one line naming the file or the ops.
    """
    directory = pathlib.Path(directory).expanduser()
    if not (directory / "saved_model.pb").is_file():
        raise UserError(f"{directory}: no SavedModel there (saved_model.pb not found); give the exported policy "
                        "of a training run, RUN_DIR/export/policy")
    metadata = read_policy_metadata(directory)
    check_export(directory, trust)
    import tensorflow as tf  # only loading needs TensorFlow

    try:
        serve = tf.saved_model.load(str(directory)).signatures["serving_default"]
    except (OSError, ValueError, KeyError, IndexError, tf.errors.OpError) as error:  # IndexError: a truncated file
        raise UserError(f"{directory}: cannot load the SavedModel's serving_default signature "
                        f"({first_line(error)}); export the policy again") from error
    return lambda observations: serve(observations=tf.constant(observations, tf.float32))["actions"].numpy(), metadata


def require_environment(directory: "str | pathlib.Path", metadata: PolicyMetadata) -> str:
    """The env id an export was trained for; one that names none is a UserError saying how to give one."""
    if metadata.env_id is None:
        raise UserError(
            f"{directory}: the policy's dataset named no environment, so its metadata has none to roll it out in; "
            f"give one: `iql-evaluate {directory} --env_id=ENV` (no retraining needed), or bind "
            "make_dataset.env_id when training"
        )
    return metadata.env_id
