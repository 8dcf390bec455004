"""One trial, start to finish and resumable: train, export to ONNX, evaluate clean and perturbed.

Each step is a real command in its own process (semore-train, semore-export, semore-eval), so a
trial runs the same way on a laptop, in a Ray worker or on a cluster node, and each step that
already finished is skipped: a resumed trial continues its training from the last checkpoint.
The trial's state lives in `trial.json`, which the progress table and the report read.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from evidence.spec import ROOT, SweepSpec, Trial
from training.perturb import perturbation_name

POLL_SECONDS = 5.0
_running: set[subprocess.Popen] = set()
_stopping = threading.Event()


class TrialFailed(RuntimeError):
    """A step of the trial exited non-zero; its log is named in the message."""


class TrialStopped(RuntimeError):
    """The sweep was told to stop (its time budget ran out); the trial resumes with --resume."""


def stop_all() -> None:
    """Ends every step in flight and starts no more: what a sweep does on SIGTERM."""
    _stopping.set()
    for proc in list(_running):
        proc.terminate()


def read_state(trial: Trial) -> dict:
    path = trial.folder / "trial.json"
    return json.loads(path.read_text()) if path.exists() else {"state": "pending"}


def write_state(trial: Trial, state: str, **extra) -> None:
    trial.folder.mkdir(parents=True, exist_ok=True)
    record = {"task": trial.task, "arm": trial.arm, "seed": trial.seed, "state": state} | extra
    tmp = trial.folder / "trial.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(trial.folder / "trial.json")


def git_commit() -> str | None:
    """The commit the code runs at: each finished trial names it, so results from several sessions
    can be told apart when the learner changed between them. A copy of the tree without its history
    (the GPU machine's) is named by SEMORE_COMMIT."""
    if commit := os.environ.get("SEMORE_COMMIT"):
        return commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except FileNotFoundError:  # no git on this machine
        return None
    return out.stdout.strip() or None


def progress(trial: Trial) -> tuple[int, float]:
    """(frames, latest evaluation return) of the trial's training so far."""
    summary = trial.folder / "run" / "summary.json"
    try:
        data = json.loads(summary.read_text())
    except (OSError, json.JSONDecodeError):  # not written yet, or mid-write
        return 0, math.nan
    curve = data.get("curve") or [{"return": math.nan}]
    return int(data.get("frames", 0)), float(curve[-1]["return"])


def _step(cmd: list[str], log: Path, env: dict, on_poll: Callable[[], None] | None = None) -> None:
    if _stopping.is_set():
        raise TrialStopped("the sweep is stopping")
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _running.add(proc)
        try:
            while proc.poll() is None:
                time.sleep(POLL_SECONDS if on_poll else 0.2)
                if on_poll is not None:
                    on_poll()
        finally:
            if proc.poll() is None:  # the trial was cancelled: stop the step with it
                proc.terminate()
                proc.wait()
            _running.discard(proc)
    if _stopping.is_set():
        raise TrialStopped("the sweep was stopped")
    if proc.returncode != 0:
        raise TrialFailed(f"`{' '.join(cmd[2:4])}` exited {proc.returncode}; see {log}")


def run_trial(trial: Trial, spec: SweepSpec, report: Callable[[dict], None] | None = None) -> None:
    """Runs (or finishes) one trial; `report` receives {frames, return} while it trains."""
    if read_state(trial)["state"] == "done":
        return
    # Read before training starts: a tree checked out anew while the trial runs (its next trials
    # are to run newer code) must not rename the code that trained this one.
    commit = git_commit()
    write_state(trial, "running")
    threads = str(max(1, int(spec.resources.cpus)))
    env = os.environ | {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }
    folder, log = trial.folder, trial.folder / "trial.log"

    def on_poll() -> None:
        frames, latest = progress(trial)
        write_state(trial, "running", frames=frames, latest_return=latest)
        if report is not None:
            report({"frames": frames, "return": latest})

    python = [sys.executable, "-m"]
    try:
        train = [
            *python,
            "training.cli",
            "--config",
            str(ROOT / spec.base),
            "--out",
            str(folder / "run"),
            "--resume",
        ]
        _step(train + [a for o in trial.overrides for a in ("--set", o)], log, env, on_poll)
        policy = folder / "policy.onnx"
        if not policy.exists():
            _step(
                [
                    *python,
                    "export.cli",
                    "--checkpoint",
                    str(folder / "run/checkpoint.pt"),
                    "--out",
                    str(policy),
                ],
                log,
                env,
            )
        (folder / "eval").mkdir(exist_ok=True)
        for perturbation in ["clean", *spec.eval.perturbations]:
            name = perturbation if perturbation == "clean" else perturbation_name(perturbation)
            out = folder / "eval" / f"{name}.json"
            if out.exists():
                continue
            cmd = [*python, "training.evaluate", "--model", str(policy), "--json", str(out)]
            cmd += [
                "--episodes",
                str(spec.eval.episodes),
                "--seed",
                str(spec.eval.seed),
                "--device",
                spec.eval.device,
            ]
            if perturbation != "clean":
                cmd += ["--perturb", perturbation, "--perturb-level", str(spec.eval.level)]
            _step(cmd, log, env)
    except BaseException as exc:
        frames, latest = progress(trial)
        state = "stopped" if isinstance(exc, TrialStopped) else "failed"
        write_state(trial, state, frames=frames, latest_return=latest, error=str(exc))
        raise
    frames, latest = progress(trial)
    write_state(trial, "done", frames=frames, latest_return=latest, commit=commit)
