"""`run`: FQL's main.py with agents/iql.py, in FQL's checkout and venv, on local OGBench data; OUT/result.json.

The peer gets its own HOME (OUT/home) whose `.ogbench/data` links to DATA_DIR: FQL calls
`ogbench.make_env_and_datasets(name)` with OGBench's default folder `~/.ogbench/data`, and OGBench downloads only
the files missing there, so with both files present nothing is fetched. The rest of the environment (threads,
XLA and MuJoCo settings) passes through unchanged, so the peer and iql-tf get the same CPU.
"""

import dataclasses
import os
import pathlib
import shutil
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from iql_tf import files
from iql_tf.data import ogbench_source
from iql_tf.errors import UserError
from tools.fql_peer import install, results

IMPLEMENTATION = "fql-iql"
LAUNCH = pathlib.Path(__file__).with_name("launch.py")
RUN_GROUP = "fql_peer"


@dataclasses.dataclass(frozen=True)
class Budget:
    """What both implementations are given (FQL's flag names in the comments)."""

    steps: int  # --offline_steps
    hidden_dims: Tuple[int, ...]  # --agent.actor_hidden_dims and --agent.value_hidden_dims
    alpha: float  # --agent.alpha (iql-tf: IQLAgent.beta)
    expectile: float
    batch_size: int
    discount: float
    eval_interval: int
    eval_episodes: int
    log_interval: int

    def checked(self) -> "Budget":
        for name in ("steps", "batch_size", "eval_interval", "eval_episodes", "log_interval"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name}={getattr(self, name)} must be at least 1")
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise UserError(f"--hidden_dims={','.join(map(str, self.hidden_dims))}: give positive sizes, e.g. 256,256")
        if self.steps % self.eval_interval:
            raise UserError(f"--steps={self.steps} must be a multiple of --eval_interval={self.eval_interval}: FQL "
                            "evaluates at multiples of it only, so its last evaluation would come before the end")
        if not 0 < self.expectile < 1 or not 0 < self.discount <= 1 or self.alpha < 0:
            raise UserError(f"--expectile={self.expectile} must be in (0, 1), --discount={self.discount} in (0, 1], "
                            f"--alpha={self.alpha} at least 0")
        return self

    @property
    def speed_interval(self) -> int:
        """Updates per logged speed window: --log_interval, but at least 10 windows in a run."""
        return min(self.log_interval, max(1, self.steps // 10))

    def record(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self), "hidden_dims": list(self.hidden_dims),
                "speed_interval": self.speed_interval}


def check_data(data_dir: pathlib.Path, task: str) -> str:
    """The dataset's name (iql-tf's reading of OGBench's names), once DATA_DIR holds both of its files;
    otherwise one line naming the command that writes them."""
    name = ogbench_source.parse(f"{ogbench_source.PREFIX}{task}")
    missing = [path.name for path in name.files(data_dir) if not path.is_file()]
    if missing:
        raise UserError(f"--data_dir={data_dir} has no {' or '.join(missing)} (never downloaded here): write them with "
                        f"`python -m iql_tf.generate --kind=ogbench --dataset_id={name.dataset} "
                        f"--ogbench_dir={data_dir}`")
    return name.dataset


def prepare_home(out: pathlib.Path, data_dir: pathlib.Path) -> pathlib.Path:
    """OUT/home with .ogbench/data linked to DATA_DIR (absolute) and a tmp folder; returns the home."""
    home = out / "home"
    link = home / ".ogbench" / "data"
    link.parent.mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    target = data_dir.resolve()
    if link.is_symlink():
        if pathlib.Path(os.readlink(link)) == target:
            return home
        link.unlink()
    elif link.exists():
        raise UserError(f"{link} exists and is not a link: delete {home} and run again")
    link.symlink_to(target, target_is_directory=True)
    return home


def peer_environment(home: pathlib.Path, layout: install.Layout) -> Dict[str, str]:
    """This process's environment, with the peer's HOME, venv and temporary folder, wandb off, no Python paths
    of iql-tf's venv."""
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    environment.update(HOME=str(home), TMPDIR=str(home / "tmp"), WANDB_MODE="disabled",
                       VIRTUAL_ENV=str(layout.venv),
                       PATH=os.pathsep.join([str(layout.venv / "bin"), environment.get("PATH", "")]))
    return environment


def peer_command(layout: install.Layout, task: str, seed: int, save_dir: pathlib.Path, budget: Budget) -> List[str]:
    """FQL's main.py with its IQL agent. --save_interval beyond the last step: no parameter pickles;
    --buffer_size=1: the replay buffer is then the dataset's size (FQL takes the larger), not 2M rows, which
    changes nothing offline (batches are drawn from the dataset's rows only)."""
    hidden = "(" + ",".join(map(str, budget.hidden_dims)) + ",)"
    return [str(layout.python), str(LAUNCH), "main.py", f"--env_name={task}", f"--seed={seed}",
            f"--save_dir={save_dir}", f"--run_group={RUN_GROUP}", f"--offline_steps={budget.steps}",
            "--online_steps=0", f"--eval_interval={budget.eval_interval}", f"--eval_episodes={budget.eval_episodes}",
            f"--log_interval={budget.speed_interval}", "--video_episodes=0", f"--save_interval={budget.steps + 1}",
            "--buffer_size=1", "--agent=agents/iql.py", f"--agent.alpha={budget.alpha}",
            f"--agent.expectile={budget.expectile}", f"--agent.discount={budget.discount}",
            f"--agent.batch_size={budget.batch_size}", f"--agent.actor_hidden_dims={hidden}",
            f"--agent.value_hidden_dims={hidden}"]


def launch(command: List[str], core: Optional[int], log: Optional[pathlib.Path], **kwargs) -> int:
    """Runs `command` to its end: on every core, or pinned to one `core` (its threads see one CPU) with its
    output in `log` instead of the terminal. Returns the exit status."""
    if core is None:
        return subprocess.run(command, **kwargs).returncode
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as output:
        return subprocess.run(command, stdout=output, stderr=subprocess.STDOUT,
                              preexec_fn=lambda: os.sched_setaffinity(0, {core}), **kwargs).returncode


def run(root: pathlib.Path, task: str, seed: int, data_dir: pathlib.Path, out: pathlib.Path,
        budget: Budget, core: Optional[int] = None) -> Dict[str, Any]:
    """Trains the peer once into OUT and writes OUT/result.json (a finished OUT is refused, never overwritten);
    with `core`, pinned to that core, its output in OUT/train.log."""
    check_data(data_dir, task)
    layout = install.Layout(root)
    install.check_checkout(layout.fql)
    install.check_installed(layout)
    out = out.resolve()
    if (out / results.RESULT).exists():
        raise UserError(f"{out / results.RESULT} exists: this run is done; delete {out} to run it again")
    home = prepare_home(out, data_dir)
    save_dir = out / "fql"
    shutil.rmtree(save_dir, ignore_errors=True)  # an interrupted attempt's logs (FQL does not resume)
    command = peer_command(layout, task, seed, save_dir, budget)
    print(f"FQL's IQL on {task}, seed {seed}, {budget.steps} updates, in {out}", flush=True)
    start = time.perf_counter()
    code = launch(command, core, out / "train.log", cwd=layout.fql, env=peer_environment(home, layout))
    wall = time.perf_counter() - start
    if code:
        raise UserError(f"FQL's main.py failed (exit status {code}) for {task} seed {seed}: see its output "
                        + ("above" if core is None else f"in {out / 'train.log'}"))
    result = {"implementation": IMPLEMENTATION, "task": task, "seed": seed, "steps": budget.steps,
              **results.fql_result(results.fql_log_dir(save_dir, seed)), "wall_seconds": wall,
              "command": " ".join(command), "cwd": str(layout.fql), "budget": budget.record(),
              "fql_commit": install.PIN}
    files.write_json(out / results.RESULT, result)
    return result


def summary_line(result: Dict[str, Any]) -> str:
    rate, wall = result["updates_per_second"], result["wall_seconds"]
    return (f"{result['implementation']} {result['task']} seed {result['seed']}: final success "
            f"{result['final_success']:.3f} after {result['steps']} updates; "
            f"{'-' if rate is None else format(rate, '.1f')} updates/s; "
            f"{'-' if wall is None else format(wall, '.0f')} s in all")
