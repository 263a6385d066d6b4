"""d3rlpy's fitted Q evaluation of exported policies, run in the peer's venv (no iql-tf, no TensorFlow there):

    python d3rlpy_fqe.py ROWS.npz REQUEST.json OUT.json

ROWS.npz holds the dataset as D4RL-style rows (observations, actions, rewards, terminals, timeouts) in the data's
own units, the way a d3rlpy user loads it (`d3rlpy.dataset.MDPDataset`). REQUEST.json names the policies
(`policies`: paths of policy.onnx files, observations in and actions out in the data's units), `steps`, `seed`
and `discount`. Each policy is d3rlpy's FQE `algo` through a thin adapter that runs its ONNX model (what FQE
calls: `impl.predict_best_action` for the targets, `predict` for the initial states); everything else is
d3rlpy's default FQEConfig. The estimate is d3rlpy's InitialStateValueEstimationEvaluator on the same data.
OUT.json: one entry per policy with `value` and the updates per second, rewritten after each policy.
"""

import json
import sys
import time

import d3rlpy
import numpy as np
import onnxruntime
import torch


class OnnxImpl:
    """What d3rlpy's FQE asks of the evaluated algorithm's implementation."""

    def __init__(self, path: str):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # one core per process, as torch's
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.session.run(["actions"], {"observations": np.asarray(observations, np.float32)})[0]

    def predict_best_action(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.act(observations.detach().cpu().numpy()))


class OnnxPolicy:
    """The evaluated algorithm: an exported policy."""

    def __init__(self, path: str):
        self.impl = OnnxImpl(path)

    def predict(self, observations: np.ndarray) -> np.ndarray:
        return self.impl.act(observations)


def main(rows_path: str, request_path: str, out_path: str) -> None:
    request = json.loads(open(request_path).read())
    # One core per process, as the caller plans (--peer_processes): thread pools left at the machine's core
    # count fight the other processes for the same cores.
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    with np.load(rows_path) as rows:
        dataset = d3rlpy.dataset.MDPDataset(rows["observations"], rows["actions"], rows["rewards"],
                                            rows["terminals"], rows["timeouts"],
                                            action_space=d3rlpy.ActionSpace.CONTINUOUS)
    results = []
    for path in request["policies"]:
        d3rlpy.seed(request["seed"])
        fqe = d3rlpy.ope.FQE(algo=OnnxPolicy(path), config=d3rlpy.ope.FQEConfig(gamma=request["discount"]),
                             device="cpu:0")
        start = time.perf_counter()
        history = fqe.fit(dataset, n_steps=request["steps"], n_steps_per_epoch=request["steps"],
                          evaluators={"initial_value": d3rlpy.metrics.InitialStateValueEstimationEvaluator()},
                          show_progress=False, logger_adapter=d3rlpy.logging.NoopAdapterFactory())
        seconds = time.perf_counter() - start
        results.append({"policy": path, "value": float(history[-1][1]["initial_value"]),
                        "updates_per_second": request["steps"] / seconds})
        print(f"d3rlpy FQE {path}: {results[-1]['value']:.4g} ({results[-1]['updates_per_second']:.0f} updates/s)",
              flush=True)
        with open(out_path, "w") as out:  # after each policy: an interrupted run keeps what it estimated
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
