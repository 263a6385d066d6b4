"""`pixels`: FQL's pixel IQL (impala_small) against its reference and against iql-tf, on this machine.

1. FQL's own agent, in FQL's venv (`pixel_update.py check`), against `tools.benchmark.fql_reference`: one update
   from FQL's initial parameters on one augmented batch (what makes the reference, which the suite's
   `test_one_pixel_update_matches_the_fql_repositorys_iql_with_impala_small` holds iql-tf to, FQL's update).
2. Updates per second, one after the other on the same machine, with the same batch size, frames, networks and
   encoder: FQL's jitted `agent.update` on one batch (`pixel_update.py speed`), and iql-tf's update with
   gin/ogbench.gin's settings and impala_small, one update per compiled call as FQL's, on TensorFlow's kernels
   and with XLA, drawing its batches from a replay buffer of random frames (a gather FQL's timing does not
   make), without augmentation and with p_aug 0.5 (FQL augments on the host, outside its update).
Writes OUT/pixels.md and OUT/pixels.json.
"""

import json
import pathlib
import subprocess
import tempfile
import time
from typing import Any, Dict, List

import numpy as np

from iql_tf import files
from iql_tf.errors import UserError, first_line
from tools.fql_peer import install, peer

SCRIPT = pathlib.Path(__file__).with_name("pixel_update.py")
BUFFER_ROWS = 512


def _peer(layout: install.Layout, command: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        (pathlib.Path(home) / "tmp").mkdir()
        environment = dict(peer.peer_environment(pathlib.Path(home), layout), JAX_PLATFORMS="cpu")
        done = subprocess.run([str(layout.python), str(SCRIPT), command, json.dumps(settings)], cwd=layout.fql,
                              env=environment, capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise UserError(f"FQL's pixel_update.py {command} failed (exit {done.returncode}): "
                        f"{first_line(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no output')}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def iql_tf_speed(settings: Dict[str, Any], jit_compile: bool, augmentation_probability: float) -> float:
    """iql-tf's updates per second, one update per compiled call, with FQL's IQL settings and impala_small."""
    import tensorflow as tf

    from iql_tf.agent import IQLAgent
    from iql_tf.replay_buffer import ReplayBuffer
    from iql_tf.settings import AgentSettings

    shape = (settings["image_size"], settings["image_size"], 3 * settings["frame_stack"])
    rng = np.random.default_rng(settings["seed"])
    rows = {key: rng.integers(0, 256, (BUFFER_ROWS, *shape), dtype=np.uint8)
            for key in ("observations", "next_observations")}
    rows.update(actions=rng.uniform(-0.9, 0.9, (BUFFER_ROWS, settings["action_dim"])).astype(np.float32),
                rewards=rng.normal(size=BUFFER_ROWS).astype(np.float32), terminals=np.zeros(BUFFER_ROWS, np.float32))
    agent_settings = AgentSettings(
        hidden_dims=tuple(settings["hidden_dims"]), batch_size=settings["batch_size"], expectile=0.9,
        beta=settings["alpha"], activation="gelu_tanh", critic_layer_norm=True, constant_std=True, tanh_mean=False,
        actor_cosine_decay=False, kernel_init="glorot_uniform", update_order="joint", encoder="impala_small",
        augmentation_probability=augmentation_probability, jit_compile=jit_compile)
    agent = IQLAgent(int(np.prod(shape)), settings["action_dim"], agent_settings, 1_000_000, (settings["seed"],),
                     image_shape=shape)
    buffer = ReplayBuffer({key: tf.constant(value) for key, value in rows.items()}, settings["batch_size"])
    agent.run_updates(buffer, 1)  # traced and compiled
    start = time.perf_counter()
    for _ in range(settings["updates"]):
        agent.run_updates(buffer, 1)
    return settings["updates"] / (time.perf_counter() - start)


def compare_pixels(root: pathlib.Path, settings: Dict[str, Any], out: pathlib.Path) -> str:
    layout = install.Layout(root)
    install.check_installed(layout)
    check = _peer(layout, "check", settings)
    # Rounding moves a parameter whose first gradient is near Adam's epsilon by a part of a step (3e-4): the
    # measured worst was 4.3e-5; a wrong update moves whole arrays by steps.
    if not (check["crops_equal"] and check["same_names"] and check["largest_difference"] < 1e-4 and
            max(check["loss_differences"].values()) < 1e-4):
        raise UserError(f"FQL's agent and tools/benchmark/fql_reference.py disagree after one update: {check}")
    rows: List[Dict[str, Any]] = [{"row": "FQL's IQL (JAX, jitted update)",
                                   "updates_per_second": _peer(layout, "speed", settings)["updates_per_second"]}]
    for jit_compile in (False, True):
        for probability in (0.0, 0.5):
            rows.append({"row": f"iql-tf, {'XLA' if jit_compile else 'TF kernels'}, p_aug {probability}",
                         "updates_per_second": iql_tf_speed(settings, jit_compile, probability)})
    base = rows[0]["updates_per_second"]
    size, stack = settings["image_size"], settings["frame_stack"]
    dims = "x".join(map(str, settings["hidden_dims"]))
    lines = [f"One update of FQL's IQL from FQL's own initial parameters, its reference "
             f"(tools/benchmark/fql_reference.py) beside it: largest parameter difference "
             f"{check['largest_difference']:.1e}, where the update moved parameters by up to "
             f"{check['largest_step']:.1e} ({check['parameters']} parameter arrays; {check['elements_off_by_1e-6']} "
             f"of their {check['elements']} elements differ by more than 1e-6; crops equal: {check['crops_equal']}).",
             "",
             f"| impala_small, {size}x{size}x{3 * stack}, batch {settings['batch_size']}, {dims}, "
             f"{settings['updates']} updates | updates/s | against FQL |", "| --- | --- | --- |"]
    lines += [f"| {row['row']} | {row['updates_per_second']:.3f} | {row['updates_per_second'] / base:.2f}x |"
              for row in rows]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(out / "pixels.md", text)
    files.write_json(out / "pixels.json", {"settings": settings, "check": check, "rows": rows})
    return text
