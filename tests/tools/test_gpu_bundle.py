"""The GPU machine's bundle and sweep script, checked on the CPU: slimmed wheels stay valid, and a
sweep cut off by its time budget still leaves every trial's curve and a report behind."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile

from tests.helpers.training import ROOT
from tools.gpu_bundle import slim


def test_slimming_drops_the_paths_and_rewrites_the_record(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/__init__.py", "x = 1\n")
        z.writestr("pkg/assets/big.bin", b"\0" * 100_000)
        z.writestr("pkg-1.0.dist-info/RECORD", "stale\n")
    assert slim(wheel, ("pkg/assets/",)) > 0
    with zipfile.ZipFile(wheel) as z:
        assert sorted(z.namelist()) == ["pkg-1.0.dist-info/RECORD", "pkg/__init__.py"]
        record = z.read("pkg-1.0.dist-info/RECORD").decode().splitlines()
        digest = base64.urlsafe_b64encode(hashlib.sha256(b"x = 1\n").digest()).rstrip(b"=").decode()
    assert record == [f"pkg/__init__.py,sha256={digest},6", "pkg-1.0.dist-info/RECORD,,"]


def test_a_sweep_cut_off_by_its_budget_leaves_curves_and_a_report(tmp_path, tiny_sweep_spec):
    out, sweep = tmp_path / "out", tmp_path / "sweep"
    env = os.environ | {"PYTHON": sys.executable, "SWEEP_DIR": str(sweep), "BUDGET": "60"}
    run = subprocess.run(
        ["bash", "benchmarks/gpu_sweep.sh", str(out), str(tiny_sweep_spec(seeds=[1, 2]))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "stopped at the 60 s budget" in run.stdout or "sweep exit 0" in run.stdout
    curves = json.loads((out / "curves.json").read_text())
    assert set(curves) == {
        f"cartpole_balance/{arm}/seed{s}" for arm in ("pixel", "semore-sim") for s in (1, 2)
    }
    assert any(c["curve"] for c in curves.values())
    for name in ("report.json", "report.md", "sweep.log"):
        assert (out / name).is_file()
    assert all(p.is_file() for p in out.iterdir()), "the device returns files two folders down at most"
