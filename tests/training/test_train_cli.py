"""Real `semore-train` runs with tiny budgets: dm_control and CarRacing, kill -9 and resume."""

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers.training import finish, train
from training.checkpoint import Checkpoint


@pytest.mark.parametrize(
    "env",
    [
        ["env.id=dmc:cartpole-balance", "teacher.objects=[cart, pole_1]"],
        [
            "env.id=gym:CarRacing-v3",
            "teacher.objects=[road, car]",
            "env.action_repeat=4",
            "train.frames=240",
            "train.seed_frames=80",
            "train.eval_every_frames=240",
        ],
    ],
    ids=["dmc", "car_racing"],
)
def test_tiny_run_writes_everything_a_user_looks_for(tmp_path, env):
    out = tmp_path / "run"
    log = finish(train(out, *env))
    for name in ["checkpoint.pt", "config.yaml", "curve.png", "summary.json", "eval.csv", "update.csv"]:
        assert (out / name).is_file(), name
    assert (out / "eval.mp4").is_file() or (out / "eval.gif").is_file()
    assert any((out / "tb").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["curve"] and summary["curve"][-1]["frames"] == summary["frames"]
    assert "checkpoint:" in log and "curve:" in log
    # Not a terminal: one line per evaluation, no redrawn progress bar.
    assert "\r" not in log
    assert sum(line.startswith("eval at ") for line in log.splitlines()) == len(summary["curve"])
    with (out / "update.csv").open() as f:
        columns = next(csv.reader(f))
    assert {"critic", "transition", "reward", "knowledge_map", "contrastive", "actor"} <= set(columns)
    assert {"spread_feature", "spread_semantic", "spread_motion"} <= set(columns)


def test_drqv2_learner_trains_exports_and_evaluates(tmp_path):
    from export.cli import main as semore_export
    from training.evaluate import main as semore_eval

    out = tmp_path / "run"
    finish(train(out, "agent.kind=drqv2", "teacher.objects=[cart, pole_1]", "train.update_every_steps=2"))
    with (out / "update.csv").open() as f:
        columns = next(csv.reader(f))
    assert {"noise_std", "transition", "contrastive"} <= set(columns) and "alpha" not in columns
    assert semore_export(["--checkpoint", str(out / "checkpoint.pt"), "--out", str(out / "p.onnx")]) == 0
    assert (
        semore_eval(["--model", str(out / "p.onnx"), "--episodes", "1", "--json", str(out / "e.json")]) == 0
    )
    assert json.loads((out / "e.json").read_text())["episodes"] == 1


def test_pixel_baseline_without_teacher_runs(tmp_path):
    out = tmp_path / "run"
    finish(
        train(
            out, "encoder.kind=pixel", "teacher.kind=none", "train.frames=240", "train.eval_every_frames=240"
        )
    )
    with (out / "update.csv").open() as f:
        columns = next(csv.reader(f))
    assert "critic" in columns and "knowledge_map" not in columns


def test_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    finish(train(out, "teacher.objects=[cart]", "train.frames=160", "train.eval_every_frames=160"))
    again = train(out, "teacher.objects=[cart]")
    log, _ = again.communicate(timeout=120)
    assert again.returncode == 2 and "--resume" in log


def test_sigkill_mid_training_resumes_from_the_last_checkpoint(tmp_path):
    """Also when the checkpoint predates the format_version key: a sweep's trial stopped by the
    previous semore resumes under this one."""
    out = tmp_path / "run"
    long = [
        "teacher.objects=[cart, pole_1]",
        "train.frames=100000",
        "train.checkpoint_every_frames=160",
        "train.eval_every_frames=100000",
    ]
    proc = train(out, *long, start_new_session=True)
    ckpt = out / "checkpoint.pt"
    deadline = time.time() + 240
    while time.time() < deadline and _frames(ckpt) < 320:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint was written before the kill"

    import torch

    saved = Checkpoint.load(ckpt)
    assert saved.frames >= 320 and not saved.finished
    previous_layout = torch.load(ckpt, weights_only=False)
    del previous_layout["format_version"]
    torch.save(previous_layout, ckpt)
    log = finish(
        train(
            out,
            *long[:-2],
            f"train.frames={saved.frames + 160}",
            "train.eval_every_frames=100000",
            resume=True,
        )
    )
    assert f"resumed {out} at {saved.frames} frames" in log
    resumed = Checkpoint.load(ckpt)
    assert resumed.step > saved.step and resumed.format_version == 1
    assert resumed.agent["updates"] > saved.agent["updates"]


def _frames(ckpt: Path) -> int:
    try:
        return Checkpoint.load(ckpt).frames
    except FileNotFoundError:  # not there yet
        return 0
