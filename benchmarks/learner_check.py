"""Learner check: frames to 800 on cartpole balance at the quickstart settings, per arm and seed.

A view over the CPU evidence sweep, so the check trains nothing of its own and no trial runs
twice: the sweep's arms (`sweeps/cpu_evidence.yaml`: semore-sim, semore-none, pixel, pixel+aux)
train the quickstart setting with the same seeds, to 60k frames without early stopping, two at a
time with one thread each, and a sweep cut short resumes. Train them, then read them:

    semore-sweep --spec sweeps/cpu_evidence.yaml --out sweeps-out/cpu_evidence --backend local --resume
    python -m benchmarks.learner_check [--sweep sweeps-out/cpu_evidence]

Writes benchmarks/results/learner_check.json: for each arm and finished seed, the frames to the
first evaluation at or above the spec's threshold (800; null if never within the budget), the
best and final evaluation return (the best is descriptive, never the result), the latent spreads
at the last update and the means of the spreads, the reward loss and the temperature over the
first 10k and the last 20k frames, the wall time, the commit that trained it and its exported
policy's returns (clean and under each perturbation); for each arm the median frames to 800 over its finished
seeds (a seed that never got there counts as never; null when more than half never did). Prints
a table, with the trials still running or pending.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from evidence import stats
from evidence.spec import SweepSpec
from evidence.trial import read_state

ROOT = Path(__file__).resolve().parents[1]
SPREADS = ("spread_feature", "spread_semantic", "spread_motion")
# Early and late means of the update log, to tell a seed that starts badly from one that drifts.
WINDOWS = ((0, 10_000), (40_000, 60_000))
WINDOW_COLUMNS = (*SPREADS, "reward", "alpha")


def window_means(rows: list[dict]) -> dict:
    """Per window (frames lo <= f <= hi), the mean of each logged column in WINDOW_COLUMNS."""
    means = {}
    for lo, hi in WINDOWS:
        window = [r for r in rows if lo <= int(r["frames"]) <= hi]
        columns = {}
        for column in WINDOW_COLUMNS:
            values = [float(r[column]) for r in window if r.get(column) not in (None, "", "nan")]
            if values:
                columns[column] = round(sum(values) / len(values), 4)
        means[f"{lo // 1000}-{hi // 1000}k"] = columns
    return means


def seed_result(folder: Path, threshold: float) -> dict:
    """The figures of one finished trial folder."""
    summary = json.loads((folder / "run/summary.json").read_text())
    trial = json.loads((folder / "trial.json").read_text())
    with (folder / "run/update.csv").open() as f:
        updates = list(csv.DictReader(f))
    last_update = updates[-1]
    curve = [{"frames": p["frames"], "return": p["return"]} for p in summary["curve"]]
    return {
        "frames_to_800": stats.frames_to_threshold(curve, threshold),
        "best_return": max(p["return"] for p in curve),
        "final_return": curve[-1]["return"],
        "frames": summary["frames"],
        "seconds": summary["seconds"],
        "ms_per_frame": round(1000 * summary["seconds"] / max(summary["frames"], 1), 2),
        "spreads": {k: round(float(last_update[k]), 4) for k in SPREADS if last_update.get(k)},
        "update_means": window_means(updates),
        "commit": trial.get("commit"),
        # The exported policy's mean return (semore-eval, clean and under each perturbation).
        "exported_policy": {
            e.stem: json.loads(e.read_text())["mean_return"] for e in sorted((folder / "eval").glob("*.json"))
        },
        "curve": curve,
    }


def check(sweep: Path) -> tuple[dict, list[str]]:
    """The results (every arm of the sweep) and a line for each trial not finished yet."""
    spec = SweepSpec.model_validate_json((sweep / "sweep.json").read_text())
    results: dict = {
        "setting": f"sweeps/cpu_evidence.yaml: {spec.base} with {', '.join(spec.set)}",
        "target_return": spec.threshold,
        "sweep": spec.name,
        "machine": f"{os.cpu_count()} CPU cores, no GPU; {spec.max_concurrent} trials at a time, "
        f"{spec.resources.cpus:g} CPU each",
        "note": "frames are the figure that counts; seconds are context (machine speed varies up to 2x)",
        "arms": {arm: {"overrides": overrides, "seeds": {}} for arm, overrides in spec.arms.items()},
    }
    unfinished = []
    for trial in spec.trials(sweep):
        state = read_state(trial)
        if state["state"] == "done":
            results["arms"][trial.arm]["seeds"][str(trial.seed)] = seed_result(trial.folder, spec.threshold)
        else:
            unfinished.append(
                f"{trial.arm} seed {trial.seed}: {state['state']} ({state.get('frames', 0)} frames)"
            )
    for entry in results["arms"].values():
        reached = [r["frames_to_800"] for r in entry["seeds"].values()]
        entry["finished_seeds"] = len(reached)
        entry["median_frames_to_800"] = stats.median_frames(reached)
        entry["seeds_reaching_800"] = sum(r is not None for r in reached)
    return results, unfinished


def print_table(results: dict, unfinished: list[str]) -> None:
    print(
        f"\n{'arm':<12} {'seed':>4} {'to 800':>8} {'best':>7} {'final':>7} {'frames':>7} {'ms/frame':>8}  spreads"
    )
    for arm, entry in results["arms"].items():
        for seed, r in entry["seeds"].items():
            spreads = " ".join(f"{k.removeprefix('spread_')}={v}" for k, v in r["spreads"].items())
            print(
                f"{arm:<12} {seed:>4} {str(r['frames_to_800']):>8} {r['best_return']:>7.1f} "
                f"{r['final_return']:>7.1f} {r['frames']:>7} {r['ms_per_frame']:>8.1f}  {spreads}"
            )
        print(
            f"{arm:<12} median frames to 800 over {entry['finished_seeds']} finished seed(s): "
            f"{entry['median_frames_to_800']}"
        )
    for line in unfinished:
        print(f"not finished: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=ROOT / "sweeps-out/cpu_evidence")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/learner_check.json")
    args = parser.parse_args()
    if not (args.sweep / "sweep.json").exists():
        sys.exit(
            f"learner_check: no sweep in {args.sweep}; run "
            "semore-sweep --spec sweeps/cpu_evidence.yaml --out sweeps-out/cpu_evidence --backend local"
        )
    results, unfinished = check(args.sweep)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, unfinished)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
