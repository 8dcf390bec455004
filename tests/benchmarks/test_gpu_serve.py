"""benchmarks/gpu_serve.sh and the environment it runs in, rehearsed on the CPU (DRY_RUN=1): the last
device call's steps with a tiny bundle of pieces in place of onnxruntime-gpu's, a real server on
loopback, and the JSON it leaves for benchmarks/results/serve_latency_gpu.json."""

import json
import os
import shutil
import subprocess
import sys

from tests.helpers.training import ROOT
from tests.helpers.wheels import make_wheel
from tools.ort_cuda_pieces import pack, split, store

STREAMS = {"1", "8", "32", "128"}


def _pieces_on_the_device(tmp_path):
    """A probe wheel packed and split as tools/ort_cuda_pieces.py builds the real bundle, its pieces
    copied into one folder as the device calls leave them."""
    wheel = make_wheel(tmp_path / "wheels", "semore_probe", {"semore_probe.py": b"CARRIED = True\n"})
    (tmp_path / "stored").mkdir()
    archive = tmp_path / "bundle.tar.xz"
    pack([store(wheel, tmp_path / "stored")], archive)
    manifest = split(archive, tmp_path / "pieces", archive.stat().st_size // 2 + 1, [wheel.name])
    device = tmp_path / "ort_pieces"
    device.mkdir()
    for k in range(1, len(manifest["pieces"]) + 1):
        for f in (tmp_path / "pieces" / f"p{k}").iterdir():
            shutil.copy(f, device / f.name)
    return device


def _env(tmp_path, pieces) -> dict:
    venv = tmp_path / "ort_venv"
    return os.environ | {
        "PYTHON": sys.executable,
        "DRY_RUN": "1",
        "ORT_PIECES": str(pieces),
        "ORT_VENV": str(venv),
    }


def _use_ort_cuda(env: dict) -> subprocess.CompletedProcess:
    script = 'source benchmarks/gpu_env.sh && use_ort_cuda && "$python" -c "import json, sys; print(json.dumps(sys.path))"'
    return subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_bundle_goes_into_an_environment_that_sees_the_device_packages_behind_its_own(tmp_path):
    pieces = _pieces_on_the_device(tmp_path)
    env = _env(tmp_path, pieces)
    first = _use_ort_cuda(env)
    assert first.returncode == 0 and "installed the bundle" in first.stdout, first.stdout + first.stderr
    venv = tmp_path / "ort_venv"
    assert f"python {venv}/bin/python" in first.stdout  # the interpreter every later step uses
    path = json.loads(first.stdout.strip().splitlines()[-1])
    own = next(i for i, p in enumerate(path) if p.startswith(str(venv)) and p.endswith("site-packages"))
    device = path.index(next(p for p in path if p.startswith(sys.prefix) and p.endswith("site-packages")))
    assert own < device, "its own packages (onnxruntime-gpu, grpcio, protobuf) shadow the device's"
    probe = subprocess.run([venv / "bin/python", "-c", "import semore_probe, numpy"], capture_output=True)
    assert probe.returncode == 0, probe.stderr

    again = _use_ort_cuda(env)  # the next call on a warm machine
    assert again.returncode == 0 and "holds the bundle" in again.stdout, again.stdout + again.stderr

    piece = next(p for p in pieces.iterdir() if p.name != "manifest.json")
    piece.write_bytes(piece.read_bytes()[:-1])  # cut short in transit
    broken = _use_ort_cuda(env | {"ORT_VENV": str(tmp_path / "fresh")})
    assert broken.returncode != 0 and f"{piece} is corrupt" in broken.stderr, broken.stdout + broken.stderr


def test_the_dry_run_measures_both_providers_in_process_and_through_the_server(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", "benchmarks/gpu_serve.sh", str(out)],
        cwd=ROOT,
        env=_env(tmp_path, _pieces_on_the_device(tmp_path)),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
    assert "gpu_serve: every step exit 0" in run.stdout and "installed the bundle" in run.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["serve_latency_gpu.json", "gpu_serve.log"]
        + [f"{part}_{label}.json" for part in ("in_process", "serve") for label in ("cuda", "cpu")]
    )
    assert all(p.is_file() for p in out.iterdir()), "the device returns files two folders down at most"

    result = json.loads((out / "serve_latency_gpu.json").read_text())
    assert result["dry_run"] is True and result["policy"]["overrides"]
    for label in ("cuda", "cpu"):  # the CUDA column runs on the CPU provider here
        figures = result["summary"][label]
        assert figures["provider"] == figures["serve_provider"] == "CPUExecutionProvider"
        assert set(figures["in_process_p50_ms"]) == {"batch_1", "batch_32"}
        assert 0 < figures["single_stream_p50_ms"] <= figures["single_stream_p99_ms"]
        assert set(figures["frames_per_s_by_streams"]) == STREAMS
        batches = figures["micro_batch_by_streams"]
        assert set(batches) == STREAMS and batches["1"]["max"] == 1
        assert all(1 <= b["mean"] <= b["max"] <= 32 for b in batches.values())  # --max-batch 32
        assert result[label]["serve"]["model"]["stack_shape"] == [3, 32, 32, 3]
