"""Quickstart figure: wall time for `semore-train --config configs/quickstart.yaml` to reach 800.

Runs the real command as a subprocess and times it from process start, so imports, env start-up
and every evaluation count. Writes benchmarks/results/quickstart.json (seconds_to_800,
best_return, curve) and copies the run's learning curve to benchmarks/results/quickstart.png.

    python -m benchmarks.quickstart [--out runs/quickstart-bench] [--set train.frames=...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 800.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs/quickstart-bench")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)

    cmd = [
        sys.executable,
        "-m",
        "training.cli",
        "--config",
        str(ROOT / "configs/quickstart.yaml"),
        "--out",
        str(args.out),
    ]
    cmd += [a for o in args.overrides for a in ("--set", o)]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    total = time.perf_counter() - start

    summary = json.loads((args.out / "summary.json").read_text())
    # The trainer's clock starts after imports and env creation; add that start-up to every point.
    startup = total - summary["seconds"]
    curve = [{**p, "seconds": round(p["seconds"] + startup, 1)} for p in summary["curve"]]
    reached = next((p for p in curve if p["return"] >= TARGET), None)
    result = {
        "command": "semore-train --config configs/quickstart.yaml",
        "env": summary["env"],
        "encoder": summary["encoder"],
        "teacher": summary["teacher"],
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "target_return": TARGET,
        "seconds_to_800": reached["seconds"] if reached else None,
        "frames_to_800": reached["frames"] if reached else None,
        "best_return": summary["best_return"],
        "total_seconds": round(total, 1),
        "curve": curve,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "quickstart.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.copy(args.out / "curve.png", args.results / "quickstart.png")
    print(f"\n{'frames':>8} {'seconds':>8} {'return':>8}")
    for p in curve:
        print(f"{p['frames']:>8} {p['seconds']:>8.0f} {p['return']:>8.1f}")
    print(f"seconds to {TARGET:.0f}: {result['seconds_to_800']}  (best return {result['best_return']})")


if __name__ == "__main__":
    main()
