"""semore-report: a sweep's statistics as JSON, markdown and PNGs.

IQM and mean with bootstrap CIs, the IQM of the area under the learning curve, probability of
improvement over the baseline arm on both, IQM curves, frames to threshold, and under each
perturbation the retention (perturbed / clean return) and the perturbed return itself (its IQM and
P(improvement)): a policy that learned little keeps most of its little.

    semore-report sweeps-out/NAME [--out DIR] [--json benchmarks/results/evidence_cpu.json]
                  [--curves PATH] [--reps 2000] [--seed 0]

A run's score is the normalised clean return of its final, exported policy (`eval/clean.json`,
normalised with the spec's `return_range`); its area under the curve is the mean of its normalised
evaluation returns from AUC_START_FRAMES on (evidence.stats.area_under_curve). Only finished trials
count. No maximum over evaluations is reported anywhere: curves are IQMs at each frame count,
scores are final policies, areas means over a window.
The intervals come from scipy.stats.bootstrap (evidence.stats), not rliable, whose dependency arch
7.2.0 does not import with our pandas 3.1.1.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field

from evidence import stats
from semore_runtime.options import CommandOptions, parse_command
from training.perturb import perturbation_name

# The area under the curve starts at the first evaluation at or after this many frames: an earlier
# one reads a policy barely past its random warm-up, the same for every arm, and would only dilute
# the differences in how fast the arms learn.
AUC_START_FRAMES = 5000


# Retention's mean with its interval, and its IQM with its own, which a target over seeds reads.
RETENTION_KEYS = ("mean", "ci_low", "ci_high", "iqm", "iqm_ci_low", "iqm_ci_high")


@dataclass
class Run:
    task: str
    arm: str
    seed: int
    curve: list[dict]
    clean: float
    perturbed: dict[str, float] = field(default_factory=dict)
    commit: str | None = None  # the code that trained it (semore-sweep records it)


def perturbation_names(spec: dict) -> list[str]:
    """The spec's perturbations by the names their evaluations are stored under (eval/NAME.json)."""
    return [perturbation_name(p) for p in spec["eval"]["perturbations"]]


def load_runs(sweep: Path, spec: dict) -> list[Run]:
    """The finished trials of the spec's tasks; one marked done without a clean evaluation is noted
    on stderr and left out rather than sinking the whole report."""
    runs = []
    for trial_json in sorted((sweep / "trials").glob("*/*/*/trial.json")):
        trial = json.loads(trial_json.read_text())
        if trial["state"] != "done" or trial["task"] not in spec["tasks"]:
            continue
        folder = trial_json.parent
        evals = {p.stem: json.loads(p.read_text())["mean_return"] for p in (folder / "eval").glob("*.json")}
        if "clean" not in evals:
            print(f"semore-report: {folder} is done but has no eval/clean.json; left out", file=sys.stderr)
            continue
        summary = folder / "run" / "summary.json"
        curve = json.loads(summary.read_text())["curve"] if summary.exists() else []
        perturbed = {name: evals[name] for name in perturbation_names(spec) if name in evals}
        runs.append(
            Run(
                trial["task"],
                trial["arm"],
                trial["seed"],
                curve,
                evals["clean"],
                perturbed,
                trial.get("commit"),
            )
        )
    return runs


def trial_curves(sweep: Path) -> dict[str, dict]:
    """Every trial of the spec with its state and learning curve so far, finished or not (for a
    sweep cut short); a trial that never started is "pending" with an empty curve."""
    spec = json.loads((sweep / "sweep.json").read_text())
    curves = {}
    for seed in spec["seeds"]:
        for task in spec["tasks"]:
            for arm in spec["arms"]:
                folder = sweep / "trials" / task / arm / f"seed{seed}"
                state = (
                    json.loads((folder / "trial.json").read_text())["state"]
                    if (folder / "trial.json").exists()
                    else "pending"
                )
                summary = folder / "run" / "summary.json"
                curve = json.loads(summary.read_text())["curve"] if summary.exists() else []
                curves[f"{task}/{arm}/seed{seed}"] = {"state": state, "curve": curve}
    return curves


def normalise(value: float, task: str, spec: dict) -> float:
    """(return - low) / (high - low) with the task's return_range; dm_control's 0-1000 where the
    spec names none, as the sweep spec itself defaults."""
    low, high = spec.get("return_range", {}).get(task, (0.0, 1000.0))
    return (value - low) / (high - low)


def normalised_curve(run: Run, spec: dict) -> list[dict]:
    return [{"frames": p["frames"], "return": normalise(p["return"], run.task, spec)} for p in run.curve]


def per_task(runs: list[Run], tasks: list[str], value: Callable[[Run], float | None]) -> list[np.ndarray]:
    """Each task's values of its runs, a run without one (None) left out."""
    return [np.array([v for r in runs if r.task == t and (v := value(r)) is not None]) for t in tasks]


def interval(
    runs: list[Run], tasks: list[str], value: Callable[[Run], float | None], aggregate, reps: int, seed: int
) -> tuple:
    """`aggregate` over the runs' values with its stratified interval; three Nones where no run has one."""
    values = [x for x in per_task(runs, tasks, value) if len(x)]
    return stats.pooled_interval(values, aggregate, reps, seed) if values else (None,) * 3


def improvement(
    runs: list[Run],
    baseline: list[Run],
    tasks: list[str],
    value: Callable[[Run], float | None],
    reps: int,
    seed: int,
) -> dict | None:
    """P(a run of the arm beats a run of the baseline) on `value`, with its interval, over the tasks
    where both arms have values; None where they share none (e.g. the baseline has no finished run)."""
    x, y = per_task(runs, tasks, value), per_task(baseline, tasks, value)
    shared = [i for i in range(len(tasks)) if len(x[i]) and len(y[i])]
    if not shared:
        return None
    point, low, high = stats.probability_of_improvement_interval(
        [x[i] for i in shared], [y[i] for i in shared], reps, seed
    )
    return {"probability": point, "ci_low": low, "ci_high": high}


def empty_arm(perturbations: list[str]) -> dict:
    """An arm with no finished run: listed, with every statistic null."""
    return {
        "seeds": 0,
        **dict.fromkeys(["iqm", "ci_low", "ci_high", "mean", "mean_ci_low", "mean_ci_high"]),
        "auc_iqm": dict.fromkeys(["iqm", "ci_low", "ci_high"]),
        "prob_improvement": None,
        "auc_prob_improvement": None,
        "frames_to_threshold": {"median": None, "reached": 0, "per_run": {}},
        "retention": {p: dict.fromkeys(RETENTION_KEYS) for p in perturbations},
        "perturbed": {
            p: {"iqm": None, "ci_low": None, "ci_high": None, "prob_improvement": None} for p in perturbations
        },
        "curve": [],
        "commits": [],
    }


def summarise_arm(
    runs: list[Run],
    baseline: list[Run],
    is_baseline: bool,
    spec: dict,
    horizon: list[int],
    area: Callable[[Run], float | None],
    reps: int,
    seed: int,
) -> dict:
    """Every statistic of one arm; `baseline` is the baseline arm's runs, `horizon` the frames of the
    sweep's longest curve (where an early-stopped run's last value is carried to), `area` a run's
    area under the curve over the sweep's window."""
    perturbations = perturbation_names(spec)
    if not runs:
        return empty_arm(perturbations)
    tasks = [t for t in spec["tasks"] if any(r.task == t for r in runs)]
    by_task = [[r for r in runs if r.task == t] for t in tasks]

    def score(run: Run) -> float:
        return normalise(run.clean, run.task, spec)

    scores = per_task(runs, tasks, score)
    entry: dict = {"seeds": len(runs)}
    entry["iqm"], entry["ci_low"], entry["ci_high"] = stats.pooled_interval(scores, stats.iqm, reps, seed)
    entry["mean"], entry["mean_ci_low"], entry["mean_ci_high"] = stats.pooled_interval(
        scores, stats.mean, reps, seed
    )
    point, low, high = interval(runs, tasks, area, stats.iqm, reps, seed)
    entry["auc_iqm"] = {"iqm": point, "ci_low": low, "ci_high": high}

    # The baseline against itself is a coin toss by construction, not a finding: left null.
    entry["prob_improvement"] = None if is_baseline else improvement(runs, baseline, tasks, score, reps, seed)
    entry["auc_prob_improvement"] = (
        None if is_baseline else improvement(runs, baseline, tasks, area, reps, seed)
    )

    reached = {f"{r.task}/seed{r.seed}": stats.frames_to_threshold(r.curve, spec["threshold"]) for r in runs}
    entry["frames_to_threshold"] = {
        "median": stats.median_frames(list(reached.values())),
        "reached": sum(v is not None for v in reached.values()),
        "per_run": reached,
    }

    entry["retention"], entry["perturbed"] = {}, {}
    for name in perturbations:

        def kept(run: Run, name: str = name) -> float | None:
            return stats.retention(run.perturbed[name], run.clean) if name in run.perturbed else None

        def perturbed(run: Run, name: str = name) -> float | None:
            return normalise(run.perturbed[name], run.task, spec) if name in run.perturbed else None

        mean = interval(runs, tasks, kept, stats.mean, reps, seed)
        middle = interval(runs, tasks, kept, stats.iqm, reps, seed)
        entry["retention"][name] = dict(zip(RETENTION_KEYS, (*mean, *middle), strict=True))
        point, low, high = interval(runs, tasks, perturbed, stats.iqm, reps, seed)
        entry["perturbed"][name] = {
            "iqm": point,
            "ci_low": low,
            "ci_high": high,
            "prob_improvement": None
            if is_baseline
            else improvement(runs, baseline, tasks, perturbed, reps, seed),
        }

    curves = [[normalised_curve(r, spec) for r in rs] for rs in by_task]
    entry["curve"] = stats.iqm_curve(curves, horizon, reps, seed)
    entry["commits"] = sorted({r.commit for r in runs if r.commit})
    return entry


def build_report(sweep: Path, reps: int = 2000, seed: int = 0) -> dict:
    spec = json.loads((sweep / "sweep.json").read_text())
    runs = load_runs(sweep, spec)
    longest = max((r.curve for r in runs), key=lambda c: max((p["frames"] for p in c), default=0), default=[])
    horizon = sorted(int(p["frames"]) for p in longest)
    # One window for the whole sweep, so every arm's areas compare with the baseline's.
    window = stats.auc_window([r.curve for r in runs if r.curve], horizon, AUC_START_FRAMES)

    def area(run: Run) -> float | None:
        return stats.area_under_curve(normalised_curve(run, spec), window)

    baseline = [r for r in runs if r.arm == spec["baseline"]]
    arms = {
        arm: summarise_arm(
            [r for r in runs if r.arm == arm],
            baseline,
            arm == spec["baseline"],
            spec,
            horizon,
            area,
            reps,
            seed,
        )
        for arm in spec["arms"]
    }
    return {
        "sweep": spec["name"],
        "baseline": spec["baseline"],
        "threshold": spec["threshold"],
        "auc_window": {"from": window[0], "to": window[-1], "evaluations": len(window)} if window else None,
        "statistics": (
            "scores are normalised clean returns ((return - low) / (high - low), per task return_range) of "
            "each finished run's final policy; a run's area under the curve (auc) is the mean of its "
            "normalised evaluation returns at the auc_window frame counts (those every run was evaluated "
            f"at from {AUC_START_FRAMES} frames on, an early-stopped run's last return carried forward); "
            "iqm/ci, mean/ci, auc_iqm, IQM curves, retention (perturbed / clean return; its mean, "
            "and its iqm with iqm_ci) and perturbed (the IQM of the final policy's normalised return "
            "under each perturbation) carry 95% stratified percentile bootstrap CIs (runs resampled "
            f"within each task) from scipy.stats.bootstrap, {reps} resamples, seed {seed}; "
            "prob_improvement (final score), auc_prob_improvement (auc) and "
            "perturbed.*.prob_improvement (perturbed return), P(a run beats a run of the baseline "
            f"'{spec['baseline']}'), resample both arms the same way. rliable was not used: its "
            "dependency arch 7.2.0 does not import with pandas 3.1.1 (TypeError in deprecate_kwarg)"
        ),
        "tasks": list(spec["tasks"]),
        "arms": arms,
    }


def _ci(point, low, high, digits: int = 3) -> str:
    if point is None:
        return "-"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _probability(entry: dict | None) -> str:
    return "-" if entry is None else _ci(entry["probability"], entry["ci_low"], entry["ci_high"], digits=2)


def markdown(report: dict, perturbations: list[str]) -> str:
    """One row per arm: the scores, the area under the curve, P(improvement) on each, frames to
    threshold, then retention per perturbation; then a second table of the perturbed returns."""
    window = report["auc_window"]
    head = [
        "arm",
        "runs",
        "IQM [95% CI]",
        "mean [95% CI]",
        "AUC IQM" + (f" ({window['from']}-{window['to']} frames)" if window else "") + " [95% CI]",
        f"P(> {report['baseline']}) [95% CI]",
        f"AUC P(> {report['baseline']}) [95% CI]",
        f"frames to {report['threshold']:g} (median, reached)",
        *(f"retention: {p}" for p in perturbations),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, e in report["arms"].items():
        ttt = e["frames_to_threshold"]
        median = "never" if ttt["median"] is None else f"{ttt['median']:.0f}"
        cells = [
            arm,
            str(e["seeds"]),
            _ci(e["iqm"], e["ci_low"], e["ci_high"]),
            _ci(e["mean"], e["mean_ci_low"], e["mean_ci_high"]),
            _ci(e["auc_iqm"]["iqm"], e["auc_iqm"]["ci_low"], e["auc_iqm"]["ci_high"]),
            _probability(e["prob_improvement"]),
            _probability(e["auc_prob_improvement"]),
            "-" if not e["seeds"] else f"{median} ({ttt['reached']}/{len(ttt['per_run'])})",
            *(
                _ci(*(e["retention"][p][k] for k in ("mean", "ci_low", "ci_high")), digits=2)
                for p in perturbations
            ),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    # The perturbed return itself, beside the retention: which final policy does best under each.
    lines += [
        "",
        "| arm | "
        + " | ".join(f"{p}: IQM [95% CI], P(> {report['baseline']})" for p in perturbations)
        + " |",
    ]
    lines.append("|" + "---|" * (1 + len(perturbations)))
    for arm, e in report["arms"].items():
        cells = [arm]
        for p in perturbations:
            r = e["perturbed"][p]
            cell = _ci(r["iqm"], r["ci_low"], r["ci_high"])
            cells.append(
                cell
                if r["prob_improvement"] is None
                else f"{cell}, {r['prob_improvement']['probability']:.2f}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, perturbations: list[str], out: Path) -> None:
    """curves.png (IQM learning curves with CI bands) and retention.png (bars with CI error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    for arm, e in report["arms"].items():
        if e["curve"]:
            frames = [p["frames"] for p in e["curve"]]
            ax.plot(frames, [p["iqm"] for p in e["curve"]], label=arm)
            ax.fill_between(
                frames, [p["ci_low"] for p in e["curve"]], [p["ci_high"] for p in e["curve"]], alpha=0.2
            )
    ax.set_xlabel("environment frames")
    ax.set_ylabel("IQM normalised return (95% CI)")
    ax.set_title(report["sweep"])
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png")
    plt.close(fig)

    arms = [
        a for a, e in report["arms"].items() if any(r["mean"] is not None for r in e["retention"].values())
    ]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(perturbations)), 4), dpi=100)
    width = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        kept = [
            (j, r)
            for j, p in enumerate(perturbations)
            if (r := report["arms"][arm]["retention"][p])["mean"] is not None
        ]
        ax.bar(
            [j + i * width for j, _ in kept],
            [r["mean"] for _, r in kept],
            width,
            yerr=[[r["mean"] - r["ci_low"] for _, r in kept], [r["ci_high"] - r["mean"] for _, r in kept]],
            capsize=2,
            label=arm,
        )
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(perturbations))], perturbations, rotation=20)
    ax.set_ylabel("retention: perturbed / clean return (95% CI)")
    ax.set_title(report["sweep"])
    ax.axhline(1.0, color="grey", lw=0.8)
    if arms:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
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


class ReportOptions(CommandOptions):
    """Everything semore-report can be told; each field is one option."""

    sweep: Path = Field(description="a semore-sweep output folder", json_schema_extra={"positional": True})
    out: Path | None = Field(None, description="where to write the report (default: SWEEP/report)")
    json_path: Path | None = Field(
        None, description="also write report.json here", json_schema_extra={"flag": "--json"}
    )
    curves: Path | None = Field(None, description="also write every trial's curve so far (running ones too)")
    reps: int = Field(2000, ge=1, description="bootstrap resamples")
    seed: int = Field(0, description="bootstrap seed")


def main(argv: list[str] | None = None) -> int:
    args = parse_command(ReportOptions, "semore-report", __doc__.splitlines()[0], argv)
    if not args.sweep.is_dir():
        print(f"semore-report: no such folder: {args.sweep}", file=sys.stderr)
        return 2
    if not (args.sweep / "sweep.json").is_file():
        print(f"semore-report: {args.sweep} holds no sweep (no sweep.json)", file=sys.stderr)
        return 2
    report = _finite(build_report(args.sweep, args.reps, args.seed))
    perturbations = perturbation_names(json.loads((args.sweep / "sweep.json").read_text()))
    out = args.out or args.sweep / "report"
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    (out / "report.json").write_text(text)
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(text)
    if args.curves:
        args.curves.write_text(json.dumps(trial_curves(args.sweep), indent=1) + "\n")
    for arm, entry in report["arms"].items():
        if len(entry["commits"]) > 1:  # e.g. a sweep resumed after the learner changed
            print(
                f"semore-report: warning: arm {arm!r} pools runs trained at commits "
                f"{', '.join(entry['commits'])}; they compare only if the code they ran is the same",
                file=sys.stderr,
            )
    table = markdown(report, perturbations)
    (out / "report.md").write_text(table)
    plot(report, perturbations, out)
    print(table)
    print(f"wrote {out}/report.json, report.md, curves.png, retention.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
