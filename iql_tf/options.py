"""The settings whose value is one name of a fixed list, listed once, below both the settings that check them
(`settings.py`) and the code that carries them out: reward preprocessing (`data/rewards.py`), kernel
initialisation (`networks.py`), image encoders (`encoders.py`), the update order (`agent.py`) and how an RLDS
episode ends (`data/rlds_source.py`)."""

from iql_tf.errors import UserError

# make_dataset.reward_preprocessing (paper appendix B): what data/rewards.py does with each.
REWARD_PREPROCESSING = ("none", "locomotion", "antmaze")

# IQLAgent.kernel_init: how the networks' kernels start (networks.kernel_initializer).
KERNEL_INITS = ("orthogonal", "glorot_uniform")

# IQLAgent.encoder: how image observations are encoded (encoders.py).
ENCODERS = ("impala_small", "conv_small")

# IQLAgent.update_order: how an update orders its steps (agent.IQLAgent.update).
UPDATE_ORDERS = ("sequential", "joint")

# make_dataset.rlds_final_step: what an RLDS episode's last step is (data/rlds_source.Layout.rows).
RLDS_FINAL_STEPS = ("observation", "transition")


def check_reward_preprocessing(mode: str) -> None:
    if mode not in REWARD_PREPROCESSING:
        raise UserError(
            f"make_dataset.reward_preprocessing={mode!r} is unknown; valid values: {', '.join(REWARD_PREPROCESSING)}"
        )
