"""benchmarks/gpu_train_speed.sh, rehearsed on the CPU (DRY_RUN=1): the same steps as on the GPU
machine at tiny sizes, and the JSON it leaves for benchmarks/results/train_speed_gpu.json."""

import json
import os
import subprocess
import sys

from tests.helpers.training import ROOT

ENTRY = {"median_update_s", "updates_per_s", "env_frames_per_s", "batch_size", "image_size", "compiled"}
TRIAL = {"frames_per_s", "updates_per_s", "seconds_measured", "warm", "seconds_to_warm"}


def test_the_dry_run_measures_updates_env_frames_and_one_trial_per_encoder(tmp_path):
    env = os.environ | {"PYTHON": sys.executable, "DRY_RUN": "1"}
    run = subprocess.run(
        ["bash", "benchmarks/gpu_train_speed.sh", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "train_speed exit 0" in run.stdout, run.stdout[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_speed.log", "train_speed_gpu.json"]

    results = json.loads((tmp_path / "train_speed_gpu.json").read_text())
    assert results["compile"] is False and "machine" in results
    reference = results["settings"]["reference"]
    for kind in ("semore", "pixel"):
        entry = reference[kind]
        assert set(entry) >= ENTRY and entry["updates_per_s"] > 0 and entry["env_frames_per_s"] > 0
        assert set(entry["trial"]) >= TRIAL and entry["trial"]["warm"] and entry["trial"]["frames_per_s"] > 0
    assert results["semore_over_pixel_reference"] == reference["semore_over_pixel"] > 0
    assert reference["trial_semore_over_pixel_frames_per_s"] > 0
    assert set(results["trial_frames_per_s_reference"]) == {"semore", "pixel"}
