"""FQL's own IQL agent with the impala_small encoder, in FQL's venv: checked against `tools.benchmark.fql_reference`
and timed. Run by `python -m tools.fql_peer pixels` as

    ROOT/venv/bin/python tools/fql_peer/pixel_update.py check|speed JSON_SETTINGS   (from FQL's checkout)

and prints one JSON line. `check`: FQL's agent and the reference start from FQL's initial parameters and make one
update on the same batch, augmented by FQL's own `batched_random_crop` (and the reference's `random_crop`, which
must give the same frames); the largest difference of any parameter after it, and of the losses. `speed`: FQL's
jitted `agent.update` timed on one batch of random frames, after a compiling call. Imports only what FQL's venv
has (FQL's code, jax, numpy, and the reference's module by its path).
"""

import importlib.util
import json
import os
import pathlib
import sys
import time

import flax
import jax
import numpy as np

sys.path[0] = os.getcwd()  # FQL's checkout, as `python main.py` there would have it
from agents.iql import IQLAgent, get_config  # noqa: E402
from utils.datasets import batched_random_crop  # noqa: E402

_REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "benchmark" / "fql_reference.py"
_STACK_CONVS = {"Conv_0": "", "Conv_1": "_residual_a", "Conv_2": "_residual_b"}


def reference_module():
    spec = importlib.util.spec_from_file_location("fql_reference", _REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def agent(settings):
    config = get_config()
    config.update(encoder="impala_small", alpha=settings["alpha"], actor_hidden_dims=tuple(settings["hidden_dims"]),
                  value_hidden_dims=tuple(settings["hidden_dims"]), batch_size=settings["batch_size"])
    shape = (1, settings["image_size"], settings["image_size"], 3 * settings["frame_stack"])
    return IQLAgent.create(settings["seed"], np.zeros(shape, np.uint8), np.zeros((1, settings["action_dim"]),
                                                                                   np.float32), config)


def neutral(params, layers):
    """FQL's parameter tree under the reference's names."""
    named = {}
    for path, value in flax.traverse_util.flatten_dict(params, sep="/").items():
        module, rest = path.split("/", 1)
        network = module[len("modules_"):]
        parts = rest.split("/")
        if parts[0] == "encoder":
            if parts[1] == "MLP_0":
                name = f"{network}/encoder/features/{parts[-1]}"
            else:
                stack = parts[1][len("stack_blocks_"):]
                name = f"{network}/encoder/stack{stack}{_STACK_CONVS[parts[2]]}/{parts[-1]}"
            named[name] = np.asarray(value)
            continue
        if network == "actor":
            layer = "mean" if parts[0] == "mean_net" else parts[1][len("Dense_"):]
            named[f"actor/{layer}/{parts[-1]}"] = np.asarray(value)
            continue
        kind, index = parts[1].split("_")
        leaf = {"bias": "offset"}.get(parts[-1], parts[-1]) if kind == "LayerNorm" else parts[-1]
        layer = index if kind == "Dense" else f"norm{index}"
        if network == "value":
            named[f"value/{layer}/{leaf}"] = np.asarray(value)
        else:  # the two Qs, vmapped: a leading axis of 2
            for q in (0, 1):
                named[f"{network}{q + 1}/{layer}/{leaf}"] = np.asarray(value[q])
    assert len([name for name in named if name.startswith("value/") and "/norm" in name]) == 2 * layers
    return named


def batch(settings, rng):
    size, channels = settings["image_size"], 3 * settings["frame_stack"]
    frames = {key: rng.integers(0, 256, (settings["batch_size"], size, size, channels), dtype=np.uint8)
              for key in ("observations", "next_observations")}
    return dict(frames, actions=rng.uniform(-0.9, 0.9, (settings["batch_size"], settings["action_dim"])).astype(
        np.float32), rewards=rng.normal(size=settings["batch_size"]).astype(np.float32),
        masks=(rng.uniform(size=settings["batch_size"]) > 0.2).astype(np.float32))


def check(settings):
    reference = reference_module()
    rng = np.random.default_rng(settings["seed"])
    fql = agent(settings)
    layers = len(settings["hidden_dims"])
    ours = reference.FqlPixelIQL(neutral(fql.network.params, layers), layers, alpha=settings["alpha"])
    raw = batch(settings, rng)
    offsets = rng.integers(0, 7, (settings["batch_size"], 2))
    crop_from = np.concatenate([offsets, np.zeros((settings["batch_size"], 1), np.int64)], axis=1)
    augmented = dict(raw, **{key: np.asarray(batched_random_crop(raw[key], crop_from, 3))
                             for key in ("observations", "next_observations")})
    crops_equal = all(np.array_equal(np.asarray(reference.random_crop(raw[key], offsets)), augmented[key])
                      for key in ("observations", "next_observations"))
    before = neutral(fql.network.params, layers)
    fql, info = fql.update(augmented)
    ours.update(augmented)
    after, expected = neutral(fql.network.params, layers), ours.weights()
    return {"crops_equal": crops_equal, "parameters": len(after), "same_names": sorted(after) == sorted(expected),
            "largest_step": max(float(np.max(np.abs(after[name] - before[name]))) for name in after),
            "largest_difference": max(float(np.max(np.abs(after[name] - expected[name]))) for name in after),
            # Adam's first step is about lr * g / (|g| + eps): a gradient near eps (1e-8) takes a part of a step
            # that float rounding changes; a wrong update moves whole arrays.
            "elements": sum(value.size for value in after.values()),
            "elements_off_by_1e-6": sum(int(np.sum(np.abs(after[name] - expected[name]) > 1e-6)) for name in after),
            "loss_differences": {name: abs(float(info[f"{name.split('_')[0]}/{name}"]) - float(ours.info[name]))
                                 for name in ("value_loss", "critic_loss", "actor_loss")}}


def speed(settings):
    fql = agent(settings)
    data = jax.device_put(batch(settings, np.random.default_rng(settings["seed"])))
    fql, info = fql.update(data)  # compiles
    jax.block_until_ready(info)
    start = time.perf_counter()
    for _ in range(settings["updates"]):
        fql, info = fql.update(data)
    jax.block_until_ready((fql, info))
    return {"updates_per_second": settings["updates"] / (time.perf_counter() - start)}


if __name__ == "__main__":
    command, given = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"check": check, "speed": speed}[command](given)))
