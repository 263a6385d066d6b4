"""The runs and checkpoints of a sweep ranked by fitted Q evaluation on a dataset, without a simulator (what
`iql-report ROOT --ope_dataset=SOURCE` writes as ope.md / ope.json).

Every kept checkpoint of every seed of every finished run under ROOT is a candidate policy: restored, exported
into OUTPUT/ope/RUN/seed_K/step_S/policy (so that the chosen one deploys as it is), and estimated there by FQE
(`estimation.py`, resumable in that folder). The candidates are ranked by FQE's value; where the runs were also
evaluated in an environment at those steps, the true scores stand beside the estimates, with the Spearman rank
correlation between the two and the regret of the pick (the best true score minus the true score of FQE's top
candidate): how far the ranking would have misled someone without the simulator.
"""

import pathlib
from typing import Any, Dict, List, Optional

import numpy as np
from absl import logging

from iql_tf import files, results, run_files
from iql_tf.checkpoints import Checkpoints
from iql_tf.errors import UserError
from iql_tf.settings import FQESettings

OPE_FOLDER = "ope"


def rank_checkpoints(root: pathlib.Path, source: Any, settings: FQESettings, output: pathlib.Path,
                     initial_observations: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """FQE's estimate of every kept checkpoint of every finished run under `root` (see the module docstring),
    read out at `initial_observations` where given (`estimation.estimate_value`)."""
    from iql_tf.ope import estimation
    from iql_tf.policy.metadata import PolicyMetadata
    from iql_tf.run_state import restore_run

    finished = sorted(root.rglob(run_files.FINISHED))
    if not finished:
        raise UserError(f"{root}: no finished runs there: train some first (iql-sweep, iql-train)")
    candidates: List[Dict[str, Any]] = []
    for path in finished:
        directory = run_files.RunFiles(path.parent)
        summary, recorded = directory.finished(), directory.results()
        relative = path.parent.relative_to(root)
        for step in sorted(Checkpoints(directory.checkpoints).steps()):
            run = restore_run(directory.path, step)
            for member, (seed, hparams) in enumerate(zip(summary["seeds"], summary["hparams"])):
                workdir = output / OPE_FOLDER / relative / f"seed_{seed}" / f"step_{step}"
                logging.info("FQE of %s, seed %d, step %d", directory.path, seed, step)
                metadata = PolicyMetadata(**run.data_record, seed=seed, step=step, evaluation={}, gin_config="")
                estimate = estimation.estimate_value(run.policy(member), metadata, source, settings, workdir,
                                                     policy_identity=f"{relative} seed {seed} step {step}",
                                                     initial_observations=initial_observations)
                if not (workdir / "policy").is_dir():
                    run.export(workdir / "policy", member)
                kind, score = results.score_of(recorded.get((step, seed), {}))
                candidates.append({"run": str(relative), "configuration": results.configuration_label(summary, hparams),
                                   "seed": seed, "step": step, "true_score": score, "score_kind": kind,
                                   "policy": str(workdir / "policy"), **estimate})
    candidates.sort(key=lambda candidate: -candidate["value"])
    report: Dict[str, Any] = {"dataset": str(source), "fqe": settings.record(), "candidates": candidates,
                              "initial_states_from": "the given initial states" if initial_observations is not None
                              else "the data's trajectory starts"}
    scored = [candidate for candidate in candidates if candidate["true_score"] is not None]
    if len(scored) == len(candidates) and len(candidates) >= 2:
        report.update(ranking_quality([c["value"] for c in candidates], [c["true_score"] for c in candidates]))
    return report


def ranking_quality(estimates: List[float], truths: List[float]) -> Dict[str, float]:
    """The Spearman rank correlation of `estimates` with `truths` (ties ranked by their mean rank) and the
    regret of the estimates' top pick: max(truths) - the truth of argmax(estimates)."""
    from scipy import stats

    rho = stats.spearmanr(estimates, truths).statistic
    return {"spearman": float(rho) if np.isfinite(rho) else float("nan"),
            "regret": float(np.max(truths) - truths[int(np.argmax(estimates))])}


def markdown(report: Dict[str, Any]) -> str:
    lines = [f"# Checkpoints ranked by fitted Q evaluation on {report['dataset']}", "",
             f"FQE: {report['fqe']['num_steps']} updates, discount {report['fqe']['discount']}; the value is the "
             f"discounted value from {report['initial_states_from']}, in the data's reward units, with its 95 % "
             "bootstrap interval.", ""]
    if "spearman" in report:
        lines += [f"Against the true scores: Spearman rank correlation {report['spearman']:.3f}, regret of FQE's "
                  f"pick {report['regret']:.3g}.", ""]
    ensemble = report["fqe"].get("ensemble_size", 1) > 1
    spread_column = (" ensemble spread |", " --- |") if ensemble else ("", "")
    lines += ["| rank | run | configuration | seed | step | FQE value [95 % CI] |" + spread_column[0] +
              " soft OPC | true score |", "| --- | --- | --- | --- | --- | --- |" + spread_column[1] + " --- | --- |"]
    for rank, c in enumerate(report["candidates"], start=1):
        soft_opc = f"{c['soft_opc']:.4g}" if "soft_opc" in c else "-"
        truth = f"{c['true_score']:.4g}" if c["true_score"] is not None else "-"
        spread = f" {c['member_spread']:.3g} |" if ensemble else ""
        lines.append(f"| {rank} | {c['run']} | {c['configuration']} | {c['seed']} | {c['step']} | "
                     f"{c['value']:.4g} [{c['value_low']:.4g}, {c['value_high']:.4g}] |{spread} {soft_opc} | {truth} |")
    lines.append("")
    return "\n".join(lines)


def write(report: Dict[str, Any], output: pathlib.Path) -> str:
    """ope.md and ope.json in `output`; the markdown."""
    text = markdown(report)
    output.mkdir(parents=True, exist_ok=True)
    files.write_text(output / "ope.md", text)
    files.write_json(output / "ope.json", report)
    return text
