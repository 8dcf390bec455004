"""semore-report: the statistics of a sweep (IQM, bootstrap CIs, probability of improvement,
IQM curves, frames to threshold, retention under perturbations), as JSON, markdown and PNGs.

    semore-report sweeps-out/NAME [--out DIR] [--json benchmarks/results/evidence_cpu.json]

A run's score is the normalised clean return of its final, exported policy (`eval/clean.json`,
normalised with the spec's `return_range`). Only finished trials count. No maximum over
evaluations is reported anywhere: curves are IQMs at each frame count, scores are final policies.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evidence import stats


@dataclass
class Run:
    task: str
    arm: str
    seed: int
    curve: list[dict]
    clean: float
    perturbed: dict[str, float] = field(default_factory=dict)


def load_runs(sweep: Path, spec: dict) -> list[Run]:
    runs = []
    for trial_json in sorted((sweep / "trials").glob("*/*/*/trial.json")):
        trial = json.loads(trial_json.read_text())
        if trial["state"] != "done":
            continue
        folder = trial_json.parent
        evals = {p.stem: json.loads(p.read_text())["mean_return"] for p in (folder / "eval").glob("*.json")}
        curve = json.loads((folder / "run" / "summary.json").read_text())["curve"]
        perturbed = {name: evals[name] for name in spec["eval"]["perturbations"] if name in evals}
        runs.append(Run(trial["task"], trial["arm"], trial["seed"], curve, evals["clean"], perturbed))
    return runs


def trial_curves(sweep: Path) -> dict[str, dict]:
    """Every trial's state and learning curve so far, finished or not (for a sweep cut short)."""
    curves = {}
    for trial_json in sorted((sweep / "trials").glob("*/*/*/trial.json")):
        summary = trial_json.parent / "run" / "summary.json"
        curve = json.loads(summary.read_text())["curve"] if summary.exists() else []
        key = str(trial_json.parent.relative_to(sweep / "trials"))
        curves[key] = {"state": json.loads(trial_json.read_text())["state"], "curve": curve}
    return curves


def normalise(value: float, task: str, spec: dict) -> float:
    low, high = spec["return_range"][task]
    return (value - low) / (high - low)


def per_task(runs: list[Run], tasks: list[str], value) -> list[np.ndarray]:
    return [np.array([value(r) for r in runs if r.task == t]) for t in tasks]


def summarise_arm(arm_runs, baseline_runs, arm, spec, tasks, grid, reps, seed) -> dict:
    baseline = spec["baseline"]
    entry: dict = {"seeds": len({(r.task, r.seed) for r in arm_runs})}
    if not arm_runs:
        return entry | {"iqm": None, "ci_low": None, "ci_high": None, "prob_improvement_over_pixel": None}
    tasks = [t for t in tasks if any(r.task == t for r in arm_runs)]
    scores = per_task(arm_runs, tasks, lambda r: normalise(r.clean, r.task, spec))
    entry["iqm"], entry["ci_low"], entry["ci_high"] = stats.interval(scores, stats.iqm, reps, seed)
    entry["mean"], entry["mean_ci_low"], entry["mean_ci_high"] = stats.interval(
        scores, stats.mean, reps, seed
    )
    entry["prob_improvement_over_pixel"] = entry["prob_improvement_ci"] = None
    if arm != baseline and baseline_runs:
        base = per_task(baseline_runs, tasks, lambda r: normalise(r.clean, r.task, spec))
        if all(len(b) for b in base):
            point, low, high = stats.probability_of_improvement_interval(scores, base, reps, seed)
            entry["prob_improvement_over_pixel"], entry["prob_improvement_ci"] = point, [low, high]
    reached = {
        f"{r.task}/seed{r.seed}": stats.frames_to_threshold(r.curve, spec["threshold"]) for r in arm_runs
    }
    entry["frames_to_threshold"] = {
        "median": stats.median_frames(list(reached.values())),
        "reached": sum(v is not None for v in reached.values()),
        "runs": len(reached),
        "per_run": reached,
    }
    entry["retention"] = {}
    for name in spec["eval"]["perturbations"]:
        kept = [r for r in arm_runs if name in r.perturbed and r.clean > 0]
        if kept:
            ratios = per_task(kept, tasks, lambda r, n=name: r.perturbed[n] / r.clean)
            point, low, high = stats.interval([x for x in ratios if len(x)], stats.mean, reps, seed)
            entry["retention"][name] = {"mean": point, "ci_low": low, "ci_high": high}
    on_grid = {id(r): stats.curve_on_grid(r.curve, grid) for r in arm_runs}
    curve = []
    for i, frames in enumerate(grid):
        values = per_task(arm_runs, tasks, lambda r, i=i: normalise(on_grid[id(r)][i], r.task, spec))
        values = [v[~np.isnan(v)] for v in values]
        if all(len(v) for v in values):
            point, low, high = stats.interval(values, stats.iqm, reps, seed)
            curve.append({"frames": int(frames), "iqm": point, "ci_low": low, "ci_high": high})
    entry["curve"] = curve
    return entry


def build_report(sweep: Path, reps: int = 2000, seed: int = 0) -> dict:
    spec = json.loads((sweep / "sweep.json").read_text())
    runs = load_runs(sweep, spec)
    tasks = list(spec["tasks"])
    grid = sorted({p["frames"] for r in runs for p in r.curve})
    arms = {}
    baseline_runs = [r for r in runs if r.arm == spec["baseline"]]
    for arm in spec["arms"]:
        arm_runs = [r for r in runs if r.arm == arm]
        arms[arm] = summarise_arm(arm_runs, baseline_runs, arm, spec, tasks, grid, reps, seed)
    return {
        "sweep": spec["name"],
        "baseline": spec["baseline"],
        "threshold": spec["threshold"],
        "tasks": tasks,
        "statistics": (
            f"normalised clean return of each run's final exported policy; IQM and mean with 95% "
            f"stratified percentile bootstrap CIs (scipy.stats.bootstrap, {reps} resamples, seed {seed}), "
            f"probability of improvement over '{spec['baseline']}' with the same bootstrap; rliable was "
            "not used: its dependency arch 7.2.0 does not import with pandas 3.1.1"
        ),
        "arms": arms,
    }


def _ci(point, low, high, digits: int = 3) -> str:
    if point is None:
        return "-"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown(report: dict, perturbations: list[str]) -> str:
    head = [
        "arm",
        "runs",
        "IQM [95% CI]",
        "mean [95% CI]",
        f"P(> {report['baseline']}) [CI]",
        "frames to threshold",
    ]
    lines = ["| " + " | ".join(head + [f"retention: {p}" for p in perturbations]) + " |"]
    lines.append("|" + "---|" * (len(head) + len(perturbations)))
    for arm, e in report["arms"].items():
        if e["iqm"] is None:
            lines.append(f"| {arm} | 0 |" + " - |" * (len(head) + len(perturbations) - 2))
            continue
        poi = e["prob_improvement_over_pixel"]
        ttt = e["frames_to_threshold"]
        median = "never" if ttt["median"] is None else f"{ttt['median']:.0f}"
        cells = [
            arm,
            str(e["seeds"]),
            _ci(e["iqm"], e["ci_low"], e["ci_high"]),
            _ci(e["mean"], e["mean_ci_low"], e["mean_ci_high"]),
            "-" if poi is None else _ci(poi, *e["prob_improvement_ci"], digits=2),
            f"{median} ({ttt['reached']}/{ttt['runs']} reached)",
        ]
        for p in perturbations:
            r = e["retention"].get(p)
            cells.append("-" if r is None else _ci(r["mean"], r["ci_low"], r["ci_high"], digits=2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, perturbations: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    for arm, e in report["arms"].items():
        if e.get("curve"):
            frames = [p["frames"] for p in e["curve"]]
            ax.plot(frames, [p["iqm"] for p in e["curve"]], label=arm)
            ax.fill_between(
                frames, [p["ci_low"] for p in e["curve"]], [p["ci_high"] for p in e["curve"]], alpha=0.2
            )
    ax.set_xlabel("environment frames")
    ax.set_ylabel("IQM normalised return (95% CI)")
    ax.set_title(report["sweep"])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png")
    plt.close(fig)

    arms = [a for a, e in report["arms"].items() if e.get("retention")]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(perturbations)), 4), dpi=100)
    width = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        retention = report["arms"][arm]["retention"]
        x = [j + i * width for j, p in enumerate(perturbations) if p in retention]
        means = [retention[p]["mean"] for p in perturbations if p in retention]
        errors = [
            [retention[p]["mean"] - retention[p]["ci_low"] for p in perturbations if p in retention],
            [retention[p]["ci_high"] - retention[p]["mean"] for p in perturbations if p in retention],
        ]
        ax.bar(x, means, width, yerr=errors, capsize=2, label=arm)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(perturbations))], perturbations, rotation=20)
    ax.set_ylabel("retention: perturbed / clean return")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "retention.png")
    plt.close(fig)


def _finite(value):
    """JSON has no NaN: a statistic that could not be computed is null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semore-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a semore-sweep output folder")
    parser.add_argument("--out", type=Path, help="where to write the report (default: SWEEP/report)")
    parser.add_argument("--json", type=Path, help="also write report.json here")
    parser.add_argument(
        "--curves", type=Path, help="also write every trial's curve so far (running ones too)"
    )
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    if not (args.sweep / "sweep.json").is_file():
        print(f"semore-report: {args.sweep} holds no sweep (no sweep.json)", file=sys.stderr)
        return 2
    report = _finite(build_report(args.sweep, args.reps, args.seed))
    perturbations = json.loads((args.sweep / "sweep.json").read_text())["eval"]["perturbations"]
    out = args.out or args.sweep / "report"
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    (out / "report.json").write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    if args.curves:
        args.curves.write_text(json.dumps(trial_curves(args.sweep), indent=1) + "\n")
    table = markdown(report, perturbations)
    (out / "report.md").write_text(table)
    plot(report, perturbations, out)
    print(table)
    print(f"wrote {out}/report.json, report.md, curves.png, retention.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
