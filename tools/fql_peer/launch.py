"""Runs FQL's main.py as `python main.py FLAGS...` would, with Weights & Biases disabled: run by the peer's venv.

    ROOT/venv/bin/python tools/fql_peer/launch.py main.py --env_name=... (from FQL's checkout)

FQL's setup_wandb calls `wandb.init(mode='online')`, and an init argument beats WANDB_MODE, so the environment
alone cannot turn it off (it would ask for an API key). Here `wandb.init` gets mode='disabled' instead; nothing
else of FQL's code is touched, and nothing is sent or written by wandb. Imports only what FQL's venv has.
"""

import os
import runpy
import sys

import wandb

_init = wandb.init


def _disabled_init(*args, **kwargs):
    kwargs["mode"] = "disabled"
    return _init(*args, **kwargs)


if __name__ == "__main__":
    wandb.init = _disabled_init
    sys.argv = sys.argv[1:]
    sys.path[0] = os.getcwd()  # FQL's checkout, as `python main.py` there would have it (not this folder)
    runpy.run_path(sys.argv[0], run_name="__main__")
