"""semore-sweep: real tiny sweeps through Ray Tune and through the local backend, resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from evidence.spec import SpecError, load_spec
from evidence.trial import run_trial
from tests.helpers.training import PIXEL_ARM, ROOT
from training.perturb import perturbation_name


def sweep(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "evidence.sweep", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def finished(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def states(out) -> dict[str, str]:
    return {
        str(p.parent.relative_to(out / "trials")): json.loads(p.read_text())["state"]
        for p in sorted((out / "trials").glob("*/*/*/trial.json"))
    }


@pytest.mark.parametrize("backend", ["ray", "local"])
def test_a_two_trial_sweep_trains_exports_and_evaluates_every_trial(tmp_path, tiny_sweep_spec, backend):
    out = tmp_path / "out"
    log = finished(sweep("--spec", str(tiny_sweep_spec()), "--out", str(out), "--backend", backend))
    assert states(out) == {
        "cartpole_balance/pixel/seed1": "done",
        "cartpole_balance/semore-sim/seed1": "done",
    }
    for arm in ("pixel", "semore-sim"):
        trial = out / "trials/cartpole_balance" / arm / "seed1"
        assert (trial / "policy.onnx").is_file()
        assert json.loads((trial / "run/summary.json").read_text())["frames"] == 480
        clean = json.loads((trial / "eval/clean.json").read_text())
        perturbed = json.loads((trial / "eval/colors.json").read_text())
        assert clean["perturb"] is None and perturbed["perturb"] == "colors" and perturbed["episodes"] == 1
    assert "semore-report" in log and "cartpole_balance/semore-sim/seed1" in log
    assert json.loads((out / "sweep.json").read_text())["name"] == "tiny"

    # Each finished trial names the commit that trained it, and the learner check is a view over
    # the sweep's trials: it trains nothing itself.
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    results = tmp_path / "learner_check.json"
    check = subprocess.run(
        [sys.executable, "-m", "benchmarks.learner_check", "--sweep", str(out), "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    arms = json.loads(results.read_text())["arms"]
    for arm in ("pixel", "semore-sim"):
        seed = arms[arm]["seeds"]["1"]
        assert seed["commit"] == head.stdout.strip() and seed["frames"] == 480
        assert seed["frames_to_800"] is None and arms[arm]["median_frames_to_800"] is None
    assert "spread_semantic" in arms["semore-sim"]["seeds"]["1"]["spreads"]
    assert "not finished" not in check.stdout


def test_resume_after_a_kill_keeps_finished_trials_and_finishes_the_rest(tmp_path, tiny_sweep_spec):
    spec, out = tiny_sweep_spec(max_concurrent=1), tmp_path / "out"
    proc = sweep("--spec", str(spec), "--out", str(out), "--backend", "local", start_new_session=True)
    first = out / "trials/cartpole_balance/pixel/seed1/trial.json"
    deadline = time.time() + 400
    while time.time() < deadline and not (
        first.exists() and json.loads(first.read_text())["state"] == "done"
    ):
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(first.read_text())["state"] == "done", "the first trial did not finish in time"
    assert states(out)["cartpole_balance/semore-sim/seed1"] != "done"
    kept = {p: p.stat().st_mtime_ns for p in first.parent.rglob("*") if p.is_file()}

    refused = sweep("--spec", str(spec), "--out", str(out), "--backend", "local")
    assert refused.wait(timeout=120) == 2 and "--resume" in refused.stdout.read()
    log = finished(sweep("--spec", str(spec), "--out", str(out), "--backend", "local", "--resume"))
    assert "1 done earlier" in log
    assert set(states(out).values()) == {"done"}
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "a finished trial was run again"

    # A resumed sweep may grow by seeds or arms; a change to a trial it holds needs another --out.
    grown = tiny_sweep_spec(max_concurrent=1, seeds=[1, 2])
    log = finished(
        sweep("--spec", str(grown), "--out", str(out), "--backend", "local", "--resume", "--seeds", "1")
    )
    assert "2 done earlier" in log and json.loads((out / "sweep.json").read_text())["seeds"] == [1, 2]
    changed = tiny_sweep_spec(
        max_concurrent=1, seeds=[1, 2], arms={"pixel": [*PIXEL_ARM, "agent.lr=0.001"], "semore-sim": []}
    )
    refused = sweep("--spec", str(changed), "--out", str(out), "--backend", "local", "--resume")
    assert refused.wait(timeout=120) == 2 and "changes more than seeds or arms" in refused.stdout.read()


def test_a_bad_override_fails_before_any_work_naming_the_trial_and_field(tmp_path, tiny_sweep_spec):
    spec = tiny_sweep_spec(arms={"pixel": PIXEL_ARM, "typo": ["agent.lrr=1"]})
    proc = sweep("--spec", str(spec), "--out", str(tmp_path / "out"), "--backend", "local")
    assert proc.wait(timeout=120) == 2
    message = proc.stdout.read()
    assert "cartpole_balance/typo/seed1" in message and "agent.lrr" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_spec_loads_with_every_trial_config_valid(path):
    spec = load_spec(path)
    assert spec.baseline in spec.arms and spec.trials(ROOT / "sweeps-out" / spec.name)


def test_a_spec_may_evaluate_under_a_folder_of_videos(tmp_path, tiny_sweep_spec):
    listed = ["colors", "video=benchmarks/data/eval_videos"]
    spec = load_spec(tiny_sweep_spec(eval={"episodes": 1, "perturbations": listed}))
    assert [perturbation_name(p) for p in spec.eval.perturbations] == ["colors", "video"]
    missing = f"video={tmp_path / 'nowhere'}"
    with pytest.raises(SpecError, match="eval.perturbations: no folder at .*nowhere"):
        load_spec(tiny_sweep_spec(eval={"perturbations": [missing]}))
    with pytest.raises(SpecError, match=r"eval.perturbations: more than one is named \['video'\]"):
        load_spec(tiny_sweep_spec(eval={"perturbations": [*listed, missing]}))
    with pytest.raises(SpecError, match=r"eval.perturbations: unknown \['video'\].*video=DIR"):
        load_spec(tiny_sweep_spec(eval={"perturbations": ["video"]}))


def test_a_trial_names_the_commit_it_started_at_though_the_tree_moves_on(
    tmp_path, tiny_sweep_spec, monkeypatch
):
    spec = load_spec(tiny_sweep_spec(arms={"pixel": [*PIXEL_ARM]}))
    (trial,) = spec.trials(tmp_path / "out")
    monkeypatch.setenv("SEMORE_COMMIT", "aaaaaaa")
    # While it trains, the tree is checked out at another commit (the next trials' code).
    run_trial(trial, spec, report=lambda _: os.environ.update(SEMORE_COMMIT="bbbbbbb"))
    assert json.loads((trial.folder / "trial.json").read_text())["commit"] == "aaaaaaa"
