"""Learner check: frames to 800 at the quickstart settings, Semore (sim teacher) against pixel.

Each arm x seed is a real `semore-train --config configs/quickstart.yaml` run in its own folder,
with the same seeds for every arm, capped at `--frames` (50k: the target is 800 within 45k, so a
seed that has not got there by then counts as never). Runs that finished are kept; an interrupted one continues from
its last checkpoint (`--resume`, the default; `--fresh` starts over). The results file is the record
across machines and sessions: a seed it holds at the same setting is not run again (run folders
are too big to keep), and each seed names the commit that trained it. `--jobs 2` runs two trials
at once with one thread each (two multi-threaded trainings on 2 cores slow each other badly).

Writes benchmarks/results/learner_check.json after every finished trial: per arm and seed the
frames to the first evaluation >= 800, the best and final return and the latent spreads at the
end; per arm the median frames to 800 over its seeds (a seed that never got there counts as
never, and the median is null when more than half never did). Prints a table.

    python benchmarks/learner_check.py [--arms semore-sim pixel] [--seeds 1 2 3] [--jobs 2] [--report]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/quickstart.yaml"
TARGET = 800.0
# An arm is a named set of overrides on the quickstart config; every arm runs the same seeds.
ARMS = {
    "semore-sim": [],
    "semore-none": ["teacher.kind=none"],
    "semore-sim-detached": ["encoder.knowledge_gate=detached"],
    "pixel": ["encoder.kind=pixel", "teacher.kind=none"],
    "pixel+aux": ["encoder.kind=pixel", "teacher.kind=none", "agent.auxiliary=true"],
}
SPREADS = ("spread_feature", "spread_semantic", "spread_motion")


def trial_command(arm: str, seed: int, frames: int, out: Path) -> list[str]:
    overrides = [f"seed={seed}", f"train.frames={frames}", "train.video=false", *ARMS[arm]]
    cmd = [sys.executable, "-m", "training.cli", "--config", str(CONFIG), "--out", str(out), "--resume"]
    return cmd + [a for o in overrides for a in ("--set", o)]


def trial_result(out: Path) -> dict | None:
    """The figures of a finished trial, or None while it is unfinished."""
    summary_path = out / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    trial = json.loads((out / "trial.json").read_text()) if (out / "trial.json").exists() else {}
    if trial.get("frames") != summary["frames"]:
        return None
    curve = summary["curve"]
    reached = next((p["frames"] for p in curve if p["return"] >= TARGET), None)
    with (out / "update.csv").open() as f:
        last_update = list(csv.DictReader(f))[-1]
    return {
        "frames_to_800": reached,
        "best_return": summary["best_return"],
        "final_return": curve[-1]["return"],
        "frames": summary["frames"],
        "seconds": summary["seconds"],
        "ms_per_frame": round(1000 * summary["seconds"] / max(summary["frames"], 1), 2),
        "spreads": {k: round(float(last_update[k]), 4) for k in SPREADS if last_update.get(k)},
        "commit": trial.get("commit"),
        "curve": [{"frames": p["frames"], "return": p["return"]} for p in curve],
    }


def median_frames(values: list[int | None]) -> float | None:
    never = [math.inf if v is None else v for v in values]
    median = statistics.median(never)
    return None if math.isinf(median) else median


def setting(frames: int) -> str:
    return f"configs/quickstart.yaml (dmc:cartpole-balance, 48 px, action repeat 4), at most {frames} frames"


def recorded(args: argparse.Namespace) -> dict[tuple[str, str], dict]:
    """The seeds the results file already holds at this setting, by (arm, seed)."""
    if not args.results.exists():
        return {}
    results = json.loads(args.results.read_text())
    if results.get("setting") != setting(args.frames):
        return {}
    return {(arm, s): r for arm, entry in results["arms"].items() for s, r in entry["seeds"].items()}


def git_commit() -> str | None:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or None


def write_results(args: argparse.Namespace, earlier: dict[tuple[str, str], dict]) -> dict:
    runs, arms, seeds, path, jobs = args.runs, args.arms, args.seeds, args.results, args.jobs
    results: dict = {
        "setting": setting(args.frames),
        "target_return": TARGET,
        "machine": f"{os.cpu_count()} CPU cores, no GPU; {jobs} trial(s) at a time"
        + (", one thread each" if jobs > 1 else ""),
        "note": "frames are the figure that counts; seconds are context (machine speed varies up to 2x)",
        "arms": {},
    }
    for arm in dict.fromkeys([*arms, *(a for a, _ in earlier)]):  # other arms' records stay
        arm_seeds = sorted({str(s) for s in seeds} | {s for a, s in earlier if a == arm}, key=int)
        per_seed = {s: trial_result(runs / arm / f"seed{s}") or earlier.get((arm, s)) for s in arm_seeds}
        done = {s: r for s, r in per_seed.items() if r is not None}
        entry: dict = {"overrides": ARMS[arm], "seeds": done}
        if len(done) == len(arm_seeds):
            entry["median_frames_to_800"] = median_frames([r["frames_to_800"] for r in done.values()])
            entry["seeds_reaching_800"] = sum(r["frames_to_800"] is not None for r in done.values())
        results["arms"][arm] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def print_table(results: dict) -> None:
    print(
        f"\n{'arm':<20} {'seed':>4} {'to 800':>8} {'best':>7} {'final':>7} {'frames':>7} {'ms/frame':>8}  spreads"
    )
    for arm, entry in results["arms"].items():
        for seed, r in entry["seeds"].items():
            spreads = " ".join(f"{k.removeprefix('spread_')}={v}" for k, v in r["spreads"].items())
            print(
                f"{arm:<20} {seed:>4} {str(r['frames_to_800']):>8} {r['best_return']:>7.1f} "
                f"{r['final_return']:>7.1f} {r['frames']:>7} {r['ms_per_frame']:>8.1f}  {spreads}"
            )
        if "median_frames_to_800" in entry:
            print(f"{arm:<20} median frames to 800: {entry['median_frames_to_800']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=["semore-sim", "pixel"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--frames", type=int, default=50_000, help="frame budget of each trial")
    parser.add_argument("--jobs", type=int, default=1, help="trials at a time (one thread each when > 1)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs/learner_check")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/learner_check.json")
    parser.add_argument("--fresh", action="store_true", help="delete earlier runs of these trials first")
    parser.add_argument("--report", action="store_true", help="only rewrite the results of finished trials")
    args = parser.parse_args()
    earlier = {} if args.fresh else recorded(args)
    if args.report:
        print_table(write_results(args, earlier))
        return

    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    if args.jobs > 1:
        env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # Seeds outermost, so an interrupted check has every arm at the same number of seeds.
    pending = [(arm, seed) for seed in args.seeds for arm in args.arms]
    running: dict[tuple[str, int], tuple[subprocess.Popen, float]] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            arm, seed = pending.pop(0)
            out = args.runs / arm / f"seed{seed}"
            if args.fresh and out.exists():
                shutil.rmtree(out)
            if trial_result(out) is not None or (arm, str(seed)) in earlier:
                print(f"{arm} seed {seed}: finished earlier, kept")
                continue
            out.mkdir(parents=True, exist_ok=True)
            log = (out / "train.log").open("a")
            print(f"{arm} seed {seed}: training in {out} (log: {out / 'train.log'})", flush=True)
            proc = subprocess.Popen(
                trial_command(arm, seed, args.frames, out), cwd=ROOT, env=env, stdout=log, stderr=log
            )
            running[(arm, seed)] = (proc, time.perf_counter())
        time.sleep(5)
        for (arm, seed), (proc, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[(arm, seed)]
            out = args.runs / arm / f"seed{seed}"
            if proc.returncode != 0:
                sys.exit(f"{arm} seed {seed} failed (exit {proc.returncode}); see {out / 'train.log'}")
            summary = json.loads((out / "summary.json").read_text())
            (out / "trial.json").write_text(json.dumps({"frames": summary["frames"], "commit": git_commit()}))
            print(
                f"{arm} seed {seed}: done, best {summary['best_return']} at {summary['frames']} frames "
                f"({(time.perf_counter() - started) / 60:.1f} min this session)",
                flush=True,
            )
            write_results(args, earlier)
    print_table(write_results(args, earlier))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
