"""The GPU machine's bundle and sweep script, checked on the CPU: slimmed wheels stay valid, the
bundle pins one version of each package and carries what its wheels need, and a sweep cut off by
its time budget still leaves every trial's curve, a report and its records behind, and resumes.

The scripts run with DRY_RUN=1: here they must not unpack the carried GL loaders into /."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile

import pytest

from tests.helpers.training import PIXEL_ARM, ROOT
from tools.gpu_bundle import DEVICE, UNUSED, WHEELS, drop_stale, normalize, slim, unmet, wheel_name


def _wheel(folder, name: str, version: str, requires: list[str] = ()) -> None:
    meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", f"Name: {name}\nVersion: {version}\n{meta}")


def _script(script: str, out, *args: str, **env: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHON": sys.executable, "DRY_RUN": "1"} | env
    return subprocess.run(
        ["bash", script, str(out), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


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


def test_the_bundle_pins_one_version_of_each_package_and_nothing_the_device_has_but_its_needs():
    names = [normalize(w.split("==")[0]) for w in WHEELS]
    assert len(names) == len(set(names)) and all("==" in w for w in WHEELS)
    for needed in ("mujoco", "dm-control", "pydantic", "pydantic-core", "imageio-ffmpeg"):
        assert needed in names
    assert not set(UNUSED) & (DEVICE | set(names))


def test_stale_wheels_go_and_unmet_requirements_are_named(tmp_path):
    pinned = dict(w.split("==") for w in WHEELS)
    _wheel(tmp_path, "pydantic", pinned["pydantic"], ["typing-extensions>=4.16", "numpy; extra == 'np'"])
    _wheel(tmp_path, "pydantic", "1.0")  # an older download beside the pinned one
    _wheel(tmp_path, "dm_env", pinned["dm-env"], ["absl-py", "Some_Thing (>=2)", "glfw"])
    assert drop_stale(tmp_path) == ["pydantic-1.0-py3-none-any.whl"]
    wheels = sorted(tmp_path.glob("*.whl"))
    assert [wheel_name(w)[0] for w in wheels] == ["dm-env", "pydantic"]
    assert unmet(wheels) == ["some-thing (by dm-env)"]


def test_the_built_bundle_carries_every_requirement():
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    if not wheels:
        pytest.skip("no .whl/: python tools/gpu_bundle.py builds it")
    names = [wheel_name(w)[0] for w in wheels]
    assert len(names) == len(set(names)), "two versions of one package stop the device's install"
    assert unmet(wheels) == []


def test_a_sweep_cut_off_by_its_budget_leaves_curves_and_a_report(tmp_path, tiny_sweep_spec):
    out, sweep = tmp_path / "out", tmp_path / "sweep"
    spec = tiny_sweep_spec(seeds=[1, 2])
    # 120 s: on a loaded 2-core machine the first trials' start-up alone took most of 60 s.
    run = _script("benchmarks/gpu_sweep.sh", out, str(spec), SWEEP_DIR=str(sweep), BUDGET="120")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "stopped at the 120 s budget" in run.stdout or "sweep exit 0" in run.stdout
    curves = json.loads((out / "curves.json").read_text())
    assert set(curves) == {
        f"cartpole_balance/{arm}/seed{s}" for arm in ("pixel", "semore-sim") for s in (1, 2)
    }
    assert any(c["curve"] for c in curves.values())
    for name in ("report.json", "report.md", "sweep.log", "trials.tgz"):
        assert (out / name).is_file()
    assert all(p.is_file() for p in out.iterdir()), "the device returns files two folders down at most"
    assert len(list(out.iterdir())) <= 8, "the device returns 8 files at most"


def test_a_detached_sweep_outlives_its_call_and_the_next_call_waits_for_it(tmp_path, tiny_sweep_spec):
    sweep = tmp_path / "gpusweep"
    spec = str(tiny_sweep_spec(arms={"pixel": PIXEL_ARM}, eval={"episodes": 1, "perturbations": []}))
    env = {"SWEEP_DIR": str(sweep), "DETACH": "1", "SEMORE_COMMIT": "abc1234"}
    first = _script("benchmarks/gpu_sweep.sh", tmp_path / "out1", spec, BUDGET="3", **env)
    assert "sweep still running" in first.stdout, first.stdout[-3000:] + first.stderr[-3000:]
    second = _script("benchmarks/gpu_sweep.sh", tmp_path / "out2", spec, BUDGET="200", **env)
    assert "already running" in second.stdout and "sweep exit" in second.stdout, second.stdout[-3000:]
    trial = json.loads((sweep / "trials/cartpole_balance/pixel/seed1/trial.json").read_text())
    assert trial["state"] == "done" and trial["commit"] == "abc1234"


def test_a_sweep_outside_the_repo_resumes_and_returns_its_records_in_one_file(tmp_path, tiny_sweep_spec):
    sweep = tmp_path / "gpusweep"
    spec = str(tiny_sweep_spec(arms={"pixel": PIXEL_ARM}, eval={"episodes": 1, "perturbations": []}))
    first = _script("benchmarks/gpu_sweep.sh", tmp_path / "out1", spec, SWEEP_DIR=str(sweep), BUDGET="200")
    assert first.returncode == 0 and "sweep exit 0" in first.stdout, (
        first.stdout[-3000:] + first.stderr[-3000:]
    )
    second = _script("benchmarks/gpu_sweep.sh", tmp_path / "out2", spec, SWEEP_DIR=str(sweep), BUDGET="200")
    assert "1 done earlier" in second.stdout and "sweep exit 0" in second.stdout, second.stdout[-3000:]

    with tarfile.open(tmp_path / "out2/trials.tgz") as tgz:
        names = {n.removeprefix("./") for n in tgz.getnames()}
    trial = "trials/cartpole_balance/pixel/seed1"
    for kept in (
        "sweep.json",
        f"{trial}/trial.json",
        f"{trial}/run/summary.json",
        f"{trial}/eval/clean.json",
    ):
        assert kept in names
    assert (sweep / trial / "policy.onnx").is_file() and (sweep / trial / "run/checkpoint.pt").is_file()
    heavy = ("checkpoint.pt", "policy.onnx", ".npz", "/tb", ".mp4", ".gif")
    assert not [n for n in names if any(n.endswith(h) or f"{h}/" in n for h in heavy)]

    # A cold machine: the records carried back in restore the finished trial, which is not run again.
    third = _script(
        "benchmarks/gpu_sweep.sh",
        tmp_path / "out3",
        spec,
        SWEEP_DIR=str(tmp_path / "fresh"),
        BUDGET="200",
        RESTORE=str(tmp_path / "out2/trials.tgz"),
    )
    assert "restored 1 trial records" in third.stdout and "1 done earlier" in third.stdout, third.stdout[
        -3000:
    ]
    assert json.loads((tmp_path / "out3/report.json").read_text())
