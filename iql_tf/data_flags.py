"""The flags of the commands that read a dataset source (`iql-convert`, `iql-validate`), defined once here with
their parsers, so that a source reads alike in both."""

from typing import Any, Dict, Optional, Tuple

from absl import flags

from iql_tf import json_records
from iql_tf.errors import UserError
from iql_tf.options import RLDS_FINAL_STEPS

FLAGS = flags.FLAGS


def define_source_flags() -> None:
    """--env_id, --env_kwargs, --action_bounds, --download, --ogbench_dir, --tfds_data_dir, --observation_keys,
    --action_keys, --rlds_final_step, --columns."""
    flags.DEFINE_string("env_id", None, "The environment the data was collected in, recorded for evaluation "
                        "(npz / HDF5 files name none; overrides a Minari dataset's).")
    flags.DEFINE_string("env_kwargs", "{}", "JSON object of kwargs for --env_id.")
    flags.DEFINE_string("action_bounds", None, "LOW,HIGH of the actions of a file that names no environment "
                        "(default -1,1).")
    flags.DEFINE_bool("download", False, "Allow Minari (or OGBench) to download a dataset that is not local.")
    flags.DEFINE_string("ogbench_dir", None, "ogbench:NAME sources: the folder of OGBench's files (default "
                        "~/.ogbench/data).")
    flags.DEFINE_string("tfds_data_dir", None, "tfds:NAME sources: TFDS's data folder (default ~/tensorflow_datasets).")
    flags.DEFINE_list("observation_keys", None, "rlds: / tfds: sources with dict observations: the parts read, in "
                      "order (default: every numeric part, sorted).")
    flags.DEFINE_list("action_keys", None, "rlds: / tfds: sources with dict actions: the parts read, in order.")
    flags.DEFINE_enum("rlds_final_step", "observation", list(RLDS_FINAL_STEPS), "rlds: / tfds: sources: an "
                      "episode's last step holds only the final observation (RLDS), or is a transition too.")
    flags.DEFINE_string("columns", None, "JSON object: which columns of a .csv / .parquet table hold each field, "
                        "e.g. '{\"rewards\": \"reward\", \"observations\": [\"x\", \"v\"]}' (make_dataset.columns).")


def parse_action_bounds(text: Optional[str]) -> Optional[Tuple[float, float]]:
    """--action_bounds=LOW,HIGH."""
    if not text:
        return None
    try:
        low, high = (float(value) for value in text.split(","))
    except ValueError as error:
        raise UserError(f"--action_bounds={text!r}: expected LOW,HIGH, e.g. --action_bounds=-2,2") from error
    return low, high


def parse_columns(text: Optional[str]) -> Optional[Dict[str, Any]]:
    """--columns='{"rewards": "reward"}'."""
    if not text:
        return None
    return json_records.parse_json_object(text, "--columns", "give a JSON object of field -> column name(s), e.g. "
                                          "--columns='{\"rewards\": \"reward\"}'")


def source_settings() -> Dict[str, Any]:
    """The parsed source flags, as `sources.resolve` and `sources.read` take them."""
    from iql_tf import envs

    from iql_tf.data.rlds_source import RLDSOptions

    rlds_options = RLDSOptions(FLAGS.observation_keys, FLAGS.action_keys, FLAGS.rlds_final_step)
    return {"download": FLAGS.download, "ogbench_dir": FLAGS.ogbench_dir, "columns": parse_columns(FLAGS.columns),
            "tfds_data_dir": FLAGS.tfds_data_dir, "rlds_options": rlds_options,
            "env_id": FLAGS.env_id, "env_kwargs": envs.parse_env_kwargs(FLAGS.env_kwargs),
            "action_bounds": parse_action_bounds(FLAGS.action_bounds)}
