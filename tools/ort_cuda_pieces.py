"""Carries ONNX Runtime's CUDA provider to the GPU machine in pieces, over consecutive device calls.

A device call carries at most 64 MiB (working tree included), and onnxruntime-gpu 1.31.1 for
CUDA 13 is a 244 MiB wheel, 221 MiB of it the deflated provider library
(libonnxruntime_providers_cuda.so, 271 MiB raw, 208 MiB of it CUDA kernels for sm_75 to sm_120).
Slimming cannot make one call of it: dropping the TensorRT provider and the unused Python
subpackages saves about 1 MiB. So `build` makes a bundle and splits it:
  1. downloads onnxruntime-gpu and the wheels semore-serve needs that the device lacks or may hold
     too old (SERVE: grpcio and protobuf at the versions the generated stubs check, the gRPC
     health and reflection services, pydantic and its needs), for CPython 3.12 on x86-64;
  2. slims the ORT wheel (tools/gpu_bundle.py's `slim`, DROP below), then rewrites every wheel
     uncompressed, so that xz sees the raw bytes: xz -9 packs the provider library into 177 MiB
     where the wheel's deflate needs 221, one call fewer;
  3. packs them into one tar.xz and splits that into equal pieces of at most --max-piece-mib,
     each in its own folder with the manifest (names, sizes and SHA-256 of every piece and of the
     whole): .ort/p1/{ort_cuda.tar.xz.1, manifest.json}, .ort/p2/..., one folder per call.
The CUDA libraries the provider loads (cuBLAS, cuDNN 9, the runtime, cuRAND, cuFFT) are not
carried: the device's torch brings them as nvidia-* wheels, and benchmarks/gpu_env.sh's
`use_ort_cuda` points the loader at them.

    python tools/ort_cuda_pieces.py build [--out .ort] [--max-piece-mib 56]

Then on the device, one `run` per piece, back to back: the machine keeps /tmp only while it stays
warm, 30 s after a call. Call k (k = 1 .. N-1) carries `.ort/pk` and runs
    mkdir -p /tmp/ort_pieces && cp .ort/pk/* /tmp/ort_pieces/ && python3 tools/ort_cuda_pieces.py check /tmp/ort_pieces
which prints the pieces present so far, each checked against its SHA-256 (a piece missing from
an earlier call means the machine went cold in between: start again at piece 1). Call N carries
`.ort/pN`, copies it the same way and runs the measurement, e.g. `bash benchmarks/gpu_serve.sh
$OUT`, whose `use_ort_cuda` (benchmarks/gpu_env.sh) joins the pieces (`join`: every piece and the
whole against the manifest, refusing a missing or corrupt one by name), unpacks the wheels and
installs them with pip --target into a virtual environment that sees the device's packages behind
its own. Both the device's CPU onnxruntime 1.30 and onnxruntime-gpu are the import package
`onnxruntime`; a package is imported whole from the first folder on the path that holds it, so
the environment's shadows the device's (each keeps its own dist-info).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import math
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.gpu_bundle import LIMIT_MIB, PLATFORMS, WHEELS, normalize, slim, tree_bytes, unmet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ORT = "onnxruntime-gpu==1.31.1"
# pydantic and its needs, at the versions tools/gpu_bundle.py pins for the training runs.
PYDANTIC = {"pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions"}
# The generated stubs (semore_runtime/proto_gen) refuse an older grpcio or protobuf, and the
# device's versions are not recorded: pinned as constraints.txt pins them.
SERVE = [
    "grpcio==1.85.3",
    "protobuf==7.36.2",
    "grpcio-health-checking==1.85.1",
    "grpcio-reflection==1.85.1",
    *(w for w in WHEELS if normalize(w.split("==")[0]) in PYDANTIC),
]
# Not imported by ORT or by this project (the fp16 export needs onnxruntime/transformers: kept).
DROP = (
    "onnxruntime/capi/libonnxruntime_providers_tensorrt.so",
    "onnxruntime/quantization/",
    "onnxruntime/tools/",
)
# In the device's package list, though not in tools/gpu_bundle.py's DEVICE: only ORT needs it.
DEVICE_TOO = {"flatbuffers"}
ARCHIVE = "ort_cuda.tar.xz"
MANIFEST = "manifest.json"
CHUNK = 1 << 20


class PiecesError(RuntimeError):
    """A piece is missing or does not match the manifest; the message names it."""


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def download(out: Path) -> list[Path]:
    """The wheels for CPython 3.12 on x86-64 Linux, as pip saves them into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(out)]
    cmd += ["--python-version", "3.12", "--implementation", "cp"]
    cmd += [arg for p in PLATFORMS for arg in ("--platform", p)] + ["--platform", "any", ORT, *SERVE]
    subprocess.run(cmd, check=True)
    wanted = {normalize(w.split("==")[0]) for w in [ORT, *SERVE]}
    return sorted(w for w in out.glob("*.whl") if normalize(w.name.split("-")[0]) in wanted)


def store(wheel: Path, out: Path) -> Path:
    """A copy of the wheel in `out` with every member uncompressed (the RECORD hashes the contents,
    so it stays valid): the bundle's xz then compresses the raw bytes, not deflate's output."""
    copy = out / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(copy, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)  # before the type changes: reading follows it
            info.compress_type = zipfile.ZIP_STORED
            dst.writestr(info, data)
    return copy


def pack(wheels: list[Path], archive: Path) -> None:
    """The wheels, flat, in one tar compressed with xz -9 (64 MiB window: the libraries' repeats)."""
    with lzma.open(archive, "wb", preset=9) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for wheel in wheels:
            tar.add(wheel, arcname=wheel.name)


def split(archive: Path, out: Path, max_piece: int, wheels: list[str]) -> dict:
    """Equal pieces of at most `max_piece` bytes, piece k in `out`/pk with the manifest beside it."""
    size = archive.stat().st_size
    count = max(1, math.ceil(size / max_piece))
    piece = math.ceil(size / count)
    pieces = []
    with archive.open("rb") as src:
        for k in range(1, count + 1):
            folder = out / f"p{k}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            name = f"{archive.name}.{k}"
            (folder / name).write_bytes(src.read(piece))
            pieces.append(
                {"name": name, "bytes": (folder / name).stat().st_size, "sha256": sha256(folder / name)}
            )
    manifest = {
        "archive": archive.name,
        "bytes": size,
        "sha256": sha256(archive),
        "pieces": pieces,
        "wheels": wheels,
    }
    for k in range(1, count + 1):
        (out / f"p{k}" / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check(folder: Path) -> tuple[dict, list[str]]:
    """(manifest, names of the pieces not there yet); a piece that is there but differs raises."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise PiecesError(f"{folder}: no readable {MANIFEST} ({exc})") from exc
    missing = []
    for piece in manifest["pieces"]:
        path = folder / piece["name"]
        if not path.is_file():
            missing.append(piece["name"])
        elif path.stat().st_size != piece["bytes"] or sha256(path) != piece["sha256"]:
            raise PiecesError(
                f"{path} is corrupt: {path.stat().st_size} bytes, SHA-256 {sha256(path)}; the manifest "
                f"says {piece['bytes']} bytes, {piece['sha256']}: carry that piece again"
            )
    return manifest, missing


def join(folder: Path, out: Path) -> list[Path]:
    """Reassembles the pieces in `folder`, checks them and the whole against the manifest, and
    unpacks the wheels into `out`; returns their paths. Nothing lands in `out` unless all match."""
    manifest, missing = check(folder)
    if missing:
        raise PiecesError(f"{folder}: missing {', '.join(missing)} of {len(manifest['pieces'])} pieces")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        archive = Path(tmp) / manifest["archive"]
        with archive.open("wb") as whole:
            for piece in manifest["pieces"]:
                with (folder / piece["name"]).open("rb") as src:
                    shutil.copyfileobj(src, whole, CHUNK)
        if sha256(archive) != manifest["sha256"]:  # pieces each intact but not of this manifest
            raise PiecesError(
                f"{folder}: the joined {manifest['archive']} does not match the manifest's SHA-256"
            )
        with lzma.open(archive) as xz, tarfile.open(fileobj=xz) as tar:
            tar.extractall(out, filter="data")
    wheels = [out / name for name in manifest["wheels"]]
    absent = [w.name for w in wheels if not w.is_file()]
    if absent:
        raise PiecesError(f"{manifest['archive']} lacks {', '.join(absent)}")
    return wheels


def ignored(folder: Path) -> bool:
    """Whether git ignores `folder`, also before it exists: asked as a folder (trailing slash),
    since a pattern such as `/.ort/` matches folders only."""
    return subprocess.run(["git", "check-ignore", "-q", f"{folder}/"], cwd=ROOT).returncode == 0


def build(out: Path, max_piece_mib: float) -> int:
    if not ignored(out):  # else the bundle would travel with every call's working tree
        print(f"{out} is not ignored by git: add it to .git/info/exclude first", file=sys.stderr)
        return 1
    wheels = download(out / "downloads")
    missing = [need for need in unmet(wheels) if need.split()[0] not in DEVICE_TOO]
    if missing:
        print(f"required, and neither carried nor on the device: {', '.join(missing)}", file=sys.stderr)
        return 1
    (ort,) = (w for w in wheels if w.name.startswith("onnxruntime_gpu-"))
    print(f"{ort.name}: {ort.stat().st_size / 2**20:.1f} MiB; slimmed: -{slim(ort, DROP) / 2**20:.1f} MiB")
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        stored = [store(w, Path(tmp)) for w in wheels]
        archive = out / ARCHIVE
        print(f"packing {len(stored)} wheels with xz -9 (minutes)")
        pack(stored, archive)
    for old in out.glob("p[0-9]*"):
        shutil.rmtree(old)
    manifest = split(archive, out, int(max_piece_mib * 2**20), [w.name for w in wheels])
    tree = tree_bytes()
    largest = max(p["bytes"] for p in manifest["pieces"])
    print(f"{manifest['archive']}: {manifest['bytes'] / 2**20:.1f} MiB, sha256 {manifest['sha256']}")
    for k, piece in enumerate(manifest["pieces"], 1):
        print(f"  call {k}: carry {out.relative_to(ROOT)}/p{k} ({piece['bytes'] / 2**20:.1f} MiB)")
    print(f"largest call: piece {largest / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB")
    if largest + tree > LIMIT_MIB * 2**20:
        print(f"over the {LIMIT_MIB} MiB a device call carries: lower --max-piece-mib", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="download, slim, pack and split the bundle (here)")
    b.add_argument("--out", type=Path, default=ROOT / ".ort")
    b.add_argument("--max-piece-mib", type=float, default=56.0)
    c = sub.add_parser("check", help="which pieces are there so far, each checked (on the device)")
    c.add_argument("folder", type=Path)
    j = sub.add_parser("join", help="check and join the pieces, unpack the wheels (on the device)")
    j.add_argument("folder", type=Path)
    j.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            return build(args.out.resolve(), args.max_piece_mib)
        if args.command == "check":
            manifest, missing = check(args.folder)
            count = len(manifest["pieces"])
            state = f"missing {', '.join(missing)}" if missing else "complete: join them"
            print(f"{args.folder}: {count - len(missing)} of {count} pieces, each intact; {state}")
            return 0
        for wheel in join(args.folder, args.out):
            print(wheel)
        return 0
    except PiecesError as exc:
        print(f"ort_cuda_pieces: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
