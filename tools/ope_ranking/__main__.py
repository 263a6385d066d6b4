"""Does fitted Q evaluation rank policies as their true returns do? iql-tf's FQE against d3rlpy's, on the same
policies and data: `python -m tools.ope_ranking`.

    python -m tools.ope_ranking setup [--root=.ope_peer]
    python -m tools.ope_ranking run --task=quickstart --out=runs/ope_ranking/quickstart
    python -m tools.ope_ranking run --task=pendulum --out=runs/ope_ranking/pendulum

`setup` gives d3rlpy 2.8 its own venv (requirements.txt beside this file; d3rlpy's PyTorch never meets
TensorFlow). `run` makes the candidates and ranks them:
  1. the data: the quickstart's generated PointMaze stitching dataset, or 20k steps of a uniformly random
     controller in Pendulum-v1 (100 episodes of 200 steps, written here as D4RL-style rows);
  2. twelve policies: IQL with expectile 0.5, 0.7 and 0.9 and behaviour cloning (beta = 0), each checkpoint of
     every third of training kept, exported and scored in the environment (the simulator only scores);
  3. iql-tf's FQE of each (`iql-report ROOT --ope_dataset`, `iql_tf/ope/ranking.py`), and d3rlpy's FQE of the
     same exported policies (their policy.onnx, run by onnxruntime in d3rlpy's venv, `d3rlpy_fqe.py`) on the same
     data, both with discount 0.99 and the same number of updates;
  4. OUT/table.md: per policy the true score and both estimates; per implementation the Spearman rank
     correlation with the true scores and the regret of its top pick. On the quickstart, whose score (success
     from one start cell) is not what FQE estimates (the value from the data's trajectory starts, all over the
     maze), the same against that value's truth, scored in the simulator from every start of the data
     (`maze_starts.py`), and iql-tf's FQE read out at the evaluation's start states.
"""

import json
import pathlib
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from absl import flags

from iql_tf import cli
from iql_tf.errors import UserError

FLAGS = flags.FLAGS
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
MARKER = "ope_peer_requirements.txt"
# The candidates: IQL's expectiles and behaviour cloning (beta = 0), each kept at three checkpoints.
CONFIGURATIONS = {"expectile=0.5": {"expectile": 0.5}, "expectile=0.7": {"expectile": 0.7},
                  "expectile=0.9": {"expectile": 0.9}, "bc": {"beta": 0.0}}
TASKS = {
    # gin config, training settings, updates, evaluation environment and episodes
    "quickstart": ("quickstart", {"hidden_dims": (64, 64)}, 45_000, None, 100),
    "pendulum": ("locomotion", {"hidden_dims": (64, 64)}, 30_000, "Pendulum-v1", 100),
}


def define_flags() -> None:
    flags.DEFINE_string("root", str(REPO_ROOT / ".ope_peer"), "Where d3rlpy's venv lives (ROOT/venv).")
    flags.DEFINE_string("python", "python3", "setup: the Python 3.11 interpreter that creates the venv.")
    flags.DEFINE_enum("task", None, list(TASKS), "run: which data.")
    flags.DEFINE_string("out", None, "run: the experiment's folder (its runs, estimates and table).")
    flags.DEFINE_integer("fqe_steps", 20_000, "run: FQE updates per policy, for both implementations.")
    flags.DEFINE_integer("seed", 0, "run: seed of the training runs and of both FQEs.")
    flags.DEFINE_integer("peer_processes", 1, "run: d3rlpy FQE processes at once (each runs PyTorch eagerly on "
                         "about one core).")


def venv_python() -> pathlib.Path:
    return pathlib.Path(FLAGS.root) / "venv" / "bin" / "python"


def setup() -> None:
    venv = pathlib.Path(FLAGS.root) / "venv"
    marker = venv / MARKER
    if marker.is_file() and marker.read_text() == REQUIREMENTS.read_text():
        print(f"{venv} already has the pinned packages")
        return
    for command in ([FLAGS.python, "-m", "venv", str(venv)],
                    [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-r",
                     str(REQUIREMENTS)]):
        if subprocess.run(command).returncode:
            raise UserError(f"`{' '.join(command)}` failed: see its output above")
    marker.write_text(REQUIREMENTS.read_text())
    print(f"{venv} ready")


def pendulum_rows(path: pathlib.Path, steps: int = 20_000, seed: int = 0) -> None:
    """A random controller's log in Pendulum-v1 as D4RL-style rows (the README's logger, longer)."""
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    env.action_space.seed(seed)
    rows: Dict[str, List[Any]] = {key: [] for key in ("observations", "actions", "rewards", "terminals", "timeouts",
                                                      "next_observations")}
    observation, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = env.action_space.sample()
        next_observation, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (observation, action, reward, terminated, truncated, next_observation)):
            rows[key].append(value)
        observation = env.reset()[0] if terminated or truncated else next_observation
    np.savez(path, **{key: np.asarray(value) for key, value in rows.items()})


def train_candidates(task: str, source: Any, root: pathlib.Path) -> None:
    """The twelve candidate policies: each configuration trained with checkpoints kept at thirds of training."""
    import iql_tf

    config, settings, steps, env_id, episodes = TASKS[task]
    third = steps // 3
    for name, overrides in CONFIGURATIONS.items():
        agent = iql_tf.IQL.from_config(config, **settings, **overrides, seed=FLAGS.seed, eval_interval=third,
                                       checkpoint_interval=third, checkpoints_to_keep=3, eval_episodes=episodes,
                                       progress_bar=False)
        agent.fit(source, steps=steps, workdir=str(root / name), eval_env=env_id)


def converted_rows(source: Any, env_id: Optional[str] = None) -> Dict[str, np.ndarray]:
    """The converted dataset's rows as they are stored (what iql-tf's FQE reads): raw observations, actions and
    rewards, terminals and dones."""
    from iql_tf.data.pipeline import load_converted, make_dataset
    from iql_tf.settings import DataSettings

    # streaming=True: only the converted directory, which load_converted then reads once
    tensors, _ = load_converted(make_dataset(DataSettings(source=source, streaming=True, env_id=env_id)).directory)
    return {key: value.numpy() for key, value in tensors.items()}


def d3rlpy_rows(source: Any, path: pathlib.Path, env_id: Optional[str]) -> None:
    """The converted dataset as the D4RL-style rows a d3rlpy user loads: raw observations, actions and rewards;
    terminals, and timeouts at every other trajectory end."""
    rows = converted_rows(source, env_id)
    np.savez(path, observations=rows["observations"], actions=rows["actions"], rewards=rows["rewards"],
             terminals=rows["terminals"], timeouts=rows["dones"] * (1.0 - rows["terminals"]))


def run() -> None:
    from iql_tf.ope import ranking
    from iql_tf.settings import FQESettings

    if FLAGS.out is None or FLAGS.task is None:
        raise UserError("run: give --task and --out")
    if not venv_python().exists():
        raise UserError(f"no d3rlpy venv in {FLAGS.root}: run `python -m tools.ope_ranking setup` first")
    out = pathlib.Path(FLAGS.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    source: Any = "iql_tf/pointmaze/umaze-stitch-v0"
    if FLAGS.task == "pendulum":
        source = str(out / "pendulum.npz")
        if not pathlib.Path(source).is_file():
            pendulum_rows(pathlib.Path(source), seed=FLAGS.seed)
    train_candidates(FLAGS.task, source, out / "runs")
    settings = FQESettings(num_steps=FLAGS.fqe_steps, seed=FLAGS.seed)
    report = ranking.rank_checkpoints(out / "runs", source, settings, out / "iql_tf")
    ranking.write(report, out / "iql_tf")
    candidates = report["candidates"]
    peer_file = out / "d3rlpy.json"
    if not peer_file.is_file():
        run_peer(source, [str(pathlib.Path(c["policy"]) / "policy.onnx") for c in candidates], settings.discount,
                 out, peer_file)
    peer = {entry["policy"]: entry for entry in json.loads(peer_file.read_text())}
    missing = [c["policy"] for c in candidates if str(pathlib.Path(c["policy"]) / "policy.onnx") not in peer]
    if missing:
        raise UserError(f"{peer_file}: no d3rlpy estimate of {missing[0]}; delete the file to estimate them again")
    peer_values = [peer[str(pathlib.Path(c["policy"]) / "policy.onnx")]["value"] for c in candidates]
    table = comparison_table(f"{FLAGS.task}: {len(candidates)} policies", candidates,
                             [c["true_score"] for c in candidates], "true score", peer_values)
    if FLAGS.task == "quickstart":
        # The quickstart's score is success from one start cell, while the data's trajectories (where both FQEs
        # read their values out) start all over the maze: the truth of what FQE estimates, scored from the
        # data's starts, and iql-tf's FQE (the same Q networks, resumed) read out where the evaluation starts.
        truths = data_start_values(candidates, source, settings.discount, out / "true_values_at_data_starts.json")
        table += comparison_table("quickstart: against the true discounted value from the data's starts",
                                  candidates, truths, "true value from the data's starts", peer_values)
        starts = out / "evaluation_starts.npy"
        np.save(starts, evaluation_starts(candidates[0]["policy"], 100))
        at_starts = ranking.rank_checkpoints(out / "runs", source, settings, out / "iql_tf",
                                             np.load(starts, allow_pickle=False))
        ranking.write(at_starts, out / "iql_tf_at_evaluation_starts")
        table += deployment_table(at_starts)
    table += f"d3rlpy's FQE ran at a median {np.median([e['updates_per_second'] for e in peer.values()]):.0f} " \
             "updates/s here.\n"
    (out / "table.md").write_text(table)
    print(table)


def run_peer(source: Any, policies: List[str], discount: float, out: pathlib.Path, peer_file: pathlib.Path) -> None:
    """d3rlpy's FQE of `policies` in --peer_processes processes at once (each policy is seeded alike, so the
    split changes no estimate), keeping what earlier, interrupted runs estimated (OUT/d3rlpy.part-K.json)."""
    if not (out / "rows.npz").is_file():
        d3rlpy_rows(source, out / "rows.npz", TASKS[FLAGS.task][3])
    done = {entry["policy"]: entry for part in sorted(out.glob("d3rlpy.part-*.json"))
            for entry in json.loads(part.read_text() or "[]")}
    remaining = [policy for policy in policies if policy not in done]
    chunks = [remaining[k::FLAGS.peer_processes] for k in range(FLAGS.peer_processes) if remaining[k::FLAGS.peer_processes]]
    first = len(list(out.glob("d3rlpy.part-*.json")))
    processes = []
    for k, chunk in enumerate(chunks, start=first):
        request = out / f"d3rlpy_request-{k}.json"
        request.write_text(json.dumps({"policies": chunk, "steps": FLAGS.fqe_steps, "seed": FLAGS.seed,
                                       "discount": discount}, indent=1))
        command = [str(venv_python()), str(HERE / "d3rlpy_fqe.py"), str(out / "rows.npz"), str(request),
                   str(out / f"d3rlpy.part-{k}.json")]
        processes.append((command, subprocess.Popen(command)))
    for command, process in processes:
        if process.wait():
            raise UserError(f"d3rlpy's FQE failed: `{' '.join(command)}`; see its output above")
    for part in sorted(out.glob("d3rlpy.part-*.json")):
        done.update({entry["policy"]: entry for entry in json.loads(part.read_text())})
    peer_file.write_text(json.dumps([done[policy] for policy in policies], indent=1))


def evaluation_starts(export: str, count: int) -> np.ndarray:
    """The raw observations of `count` resets of the export's evaluation environment (seeded as evaluation is)."""
    from iql_tf import envs
    from iql_tf.policy.metadata import read_policy_metadata

    metadata = read_policy_metadata(export)
    env = envs.make_env(metadata.env_id, metadata.env_kwargs, metadata.max_episode_steps)
    observations = [envs.flatten_observation(env.reset(seed=i)[0], metadata.observation_keys) for i in range(count)]
    env.close()
    return np.asarray(observations, np.float32)


def deployment_table(report: Dict[str, Any]) -> str:
    from iql_tf.ope.ranking import ranking_quality

    candidates = report["candidates"]
    quality = ranking_quality([c["value"] for c in candidates], [c["true_score"] for c in candidates])
    lines = ["", "iql-tf's FQE read out at 100 of the evaluation's start states instead (the same Q networks):", "",
             "| policy | step | true score | iql-tf FQE [95 % CI] |", "| --- | --- | --- | --- |"]
    for c in sorted(candidates, key=lambda c: -c["true_score"]):
        lines.append(f"| {c['run']} | {c['step']} | {c['true_score']:.4g} | {c['value']:.4g} "
                     f"[{c['value_low']:.4g}, {c['value_high']:.4g}] |")
    lines += ["", f"Spearman rho {quality['spearman']:.3f}, regret of the top pick {quality['regret']:.4g}.", ""]
    return "\n".join(lines)


def comparison_table(title: str, candidates: List[Dict[str, Any]], truths: List[float], truth_label: str,
                     peer_values: List[float]) -> str:
    from iql_tf.ope.ranking import ranking_quality

    ours = ranking_quality([c["value"] for c in candidates], truths)
    theirs = ranking_quality(peer_values, truths)
    lines = [f"## {title}", "", f"| policy | step | {truth_label} | iql-tf FQE [95 % CI] | d3rlpy FQE |",
             "| --- | --- | --- | --- | --- |"]
    for i in sorted(range(len(candidates)), key=lambda i: -truths[i]):
        c = candidates[i]
        lines.append(f"| {c['run']} | {c['step']} | {truths[i]:.4g} | {c['value']:.4g} "
                     f"[{c['value_low']:.4g}, {c['value_high']:.4g}] | {peer_values[i]:.4g} |")
    lines += ["", "| | Spearman rho | regret of the top pick |", "| --- | --- | --- |",
              f"| iql-tf FQE | {ours['spearman']:.3f} | {ours['regret']:.4g} |",
              f"| d3rlpy 2.8.1 FQE | {theirs['spearman']:.3f} | {theirs['regret']:.4g} |", "", ""]
    return "\n".join(lines)


def data_start_values(candidates: List[Dict[str, Any]], source: Any, discount: float,
                      cache: pathlib.Path) -> List[float]:
    """Each candidate's true discounted return averaged over the data's trajectory starts (`maze_starts.py`),
    kept in `cache` as each finishes (a policy takes one to two minutes)."""
    from iql_tf import files
    from tools.ope_ranking import maze_starts

    done = json.loads(cache.read_text()) if cache.is_file() else {}
    starts = None
    for c in candidates:
        if c["policy"] not in done:
            if starts is None:  # read once, and only when a value is missing
                rows = converted_rows(source)
                starts = maze_starts.data_starts(rows["observations"], rows["dones"], str(source))
            done[c["policy"]] = float(maze_starts.discounted_returns(c["policy"], starts, discount).mean())
            print(f"{c['run']} step {c['step']}: {done[c['policy']]:.4g} from {len(starts)} data starts", flush=True)
            files.write_json(cache, done)
    return [done[c["policy"]] for c in candidates]


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2 or argv[1] not in ("setup", "run"):
        raise UserError("give a command: python -m tools.ope_ranking setup | run --task=... --out=...")
    setup() if argv[1] == "setup" else run()


if __name__ == "__main__":
    define_flags()
    cli.run(main, sys.modules[__name__])
