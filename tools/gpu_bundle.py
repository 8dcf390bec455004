"""Builds what the GPU machine lacks, small enough to travel with the working tree (64 MiB).

The device machine has Python 3.12 with torch, onnx, onnxruntime (CPU), grpcio, protobuf, numpy,
scipy, PyYAML, matplotlib, tensorboard, imageio, tqdm, absl-py and lxml (DEVICE below, from
the device tool's KINDS.md), but no mujoco, dm_control, pydantic or imageio-ffmpeg, and no
network. This downloads those wheels (WHEELS) for CPython 3.12 on x86-64 Linux into `.whl/`,
drops any other wheel there (one version of each package, or the install stops), and slims the
two large ones:
- dm_control (56 MB): only the Control Suite is used; the locomotion and manipulation assets,
  the dog's meshes, test data and the Blender exporter go (about 50 MB);
- mujoco (27 MB): the experimental studio and its GUI libraries go (about 16 MB).
The wheels' RECORD files are rewritten to match. Every wheel's Requires-Dist must then be carried,
on the device, or in UNUSED (needed by code the training, export and evaluation never import);
else it stops. With `--gl` it also fetches the EGL and OpenGL loader packages that headless
rendering needs there into `.gl/` (amd64 .debs).

    python tools/gpu_bundle.py [--out .whl] [--gl]
then on the device machine: `bash benchmarks/gpu_sweep.sh OUTDIR` or
`bash benchmarks/gpu_train_speed.sh OUTDIR` (benchmarks/gpu_env.sh installs them).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MIB = 64
WHEELS = [
    "mujoco==3.17.0",
    "dm_control==1.0.50",
    "dm-env==1.6",
    "dm-tree==0.1.10",
    "pyopengl==3.1.10",
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    # pydantic-core needs typing-extensions>=4.16; the device's version is not recorded
    "typing-extensions==4.16.0",
    # mp4 reading and writing (the `video=DIR` evaluation backgrounds, eval videos): imageio has no
    # video backend there. 0.5.1's wheel (ffmpeg 4.2) is 27 MB; 0.8.1's, the project's pin, is 65 MB.
    "imageio-ffmpeg==0.5.1",
]
# The device's own packages (KINDS.md, "Python packages already there"), as far as the wheels
# above and the training, export, evaluation and serving code need them.
DEVICE = {
    "absl-py", "attrs", "etils", "fsspec", "grpcio", "imageio", "lxml", "matplotlib", "numpy",
    "onnx", "onnxruntime", "opencv-python-headless", "packaging", "pillow", "prometheus-client",
    "protobuf", "pyparsing", "pyyaml", "requests", "scipy", "setuptools", "tensorboard", "torch",
    "torchvision", "tqdm", "triton", "typing-extensions", "wrapt", "zipp",
}  # fmt: skip
# Required by a carried wheel, imported only by code that the device runs never reach.
UNUSED = {
    "glfw": "windowed rendering (MUJOCO_GL=glfw); the device renders through EGL",
    "labmaze": "dm_control.locomotion's mazes, dropped from the wheel",
    "websockets": "mujoco's remote viewer",
}
DROP = {
    "dm_control": (
        "dm_control/locomotion/",
        "dm_control/manipulation/",
        "dm_control/suite/dog_assets/",
        "dm_control/mujoco/testing/",
        "dm_control/mjcf/test_assets/",
        "dm_control/blender/",
        "dm_control/third_party/",
    ),
    "mujoco": ("mujoco/experimental/",),
}
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
]
GL_PACKAGES = ["libvulkan1", "libegl1", "libglvnd0", "libopengl0", "libgl1", "libglx0", "libgles2"]


def download(out: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(out)]
    cmd += ["--python-version", "3.12", "--implementation", "cp"]
    cmd += [arg for p in PLATFORMS for arg in ("--platform", p)] + ["--platform", "any", *WHEELS]
    subprocess.run(cmd, check=True)


def normalize(name: str) -> str:
    """A project name as the package index compares them: dm_control, dm-control, DM.Control alike."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(wheel: Path) -> tuple[str, str]:
    """(normalized project name, version) from a wheel's file name."""
    name, version = wheel.name.split("-")[:2]
    return normalize(name), version


def drop_stale(out: Path) -> list[str]:
    """Removes the wheels that WHEELS does not pin (an older download): two versions of one
    package stop the device's install. Returns their names."""
    wanted = {(normalize(n), v) for n, v in (w.split("==") for w in WHEELS)}
    stale = [w for w in sorted(out.glob("*.whl")) if wheel_name(w) not in wanted]
    for wheel in stale:
        wheel.unlink()
    return [w.name for w in stale]


def requirement_name(requirement: str) -> str:
    """The normalized project name of a requirement: 'dm_control>=1.0; python_version>"3"' -> dm-control."""
    return normalize(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group())


def requirements(wheel: Path) -> list[str]:
    """The project names a wheel requires outside its extras."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    return [
        requirement_name(line.split(":", 1)[1])
        for line in lines
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]


def unmet(wheels: list[Path]) -> list[str]:
    """Each requirement that is neither carried, on the device, nor UNUSED: 'NAME (by WHEEL)'."""
    carried = {wheel_name(w)[0] for w in wheels}
    known = carried | DEVICE | set(UNUSED)
    return sorted({f"{r} (by {wheel_name(w)[0]})" for w in wheels for r in requirements(w) if r not in known})


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def slim(wheel: Path, drop: tuple[str, ...]) -> int:
    """Rewrites the wheel without the dropped paths; returns the bytes saved."""
    before = wheel.stat().st_size
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        kept = [i for i in src.infolist() if not i.filename.startswith(drop)]
        record = next(i.filename for i in kept if i.filename.endswith(".dist-info/RECORD"))
        lines = []
        for info in kept:
            if info.filename == record:
                continue
            data = src.read(info)
            dst.writestr(info, data)
            lines.append(_record_line(info.filename, data))
        dst.writestr(record, "\n".join([*lines, f"{record},,"]) + "\n")
    tmp.replace(wheel)
    return before - wheel.stat().st_size


def fetch_gl(out: Path) -> None:
    """The EGL loaders the GPU machine lacks, as amd64 .debs, whatever this machine's architecture."""
    lists = Path("/tmp/amd64")
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    apt = [
        "apt-get",
        "-oAPT::Architecture=amd64",
        "-oAPT::Architectures=amd64",
        f"-oDir::State::Lists={lists}",
    ]
    subprocess.run([*apt, "update"], check=True, stdout=subprocess.DEVNULL)
    out.mkdir(exist_ok=True)
    subprocess.run([*apt, "download", *GL_PACKAGES], check=True, cwd=out)


def tree_bytes() -> int:
    """What travels besides the bundle: the files git tracks or would add (not the ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sum((ROOT / f).stat().st_size for f in listed if (ROOT / f).is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    parser.add_argument("--gl", action="store_true", help="also fetch the EGL/OpenGL loaders into .gl/")
    args = parser.parse_args()
    args.out.mkdir(exist_ok=True)
    download(args.out)
    for name in drop_stale(args.out):
        print(f"removed {name}: not in WHEELS")
    for wheel in sorted(args.out.glob("*.whl")):
        package = wheel.name.split("-")[0]
        if package in DROP:
            saved = slim(wheel, DROP[package])
            print(f"slimmed {wheel.name}: -{saved / 2**20:.1f} MiB")
    wheels = sorted(args.out.glob("*.whl"))
    names = [wheel_name(w)[0] for w in wheels]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        print(f"more than one version of: {', '.join(twice)}", file=sys.stderr)
        return 1
    missing = unmet(wheels)
    if missing:
        print(f"required, and neither carried nor on the device: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.gl:
        fetch_gl(ROOT / ".gl")
    bundle = sum(f.stat().st_size for f in args.out.glob("*.whl"))
    for wheel in wheels:
        print(f"  {wheel.stat().st_size / 2**20:6.2f} MiB  {wheel.name}")
    gl = sum(f.stat().st_size for f in (ROOT / ".gl").glob("*.deb")) if (ROOT / ".gl").exists() else 0
    tree = tree_bytes()
    total = (bundle + gl + tree) / 2**20
    print(
        f"wheels {bundle / 2**20:.1f} MiB + .gl {gl / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = {total:.1f} MiB"
    )
    if total > LIMIT_MIB:
        print(f"over the {LIMIT_MIB} MiB a device call carries", file=sys.stderr)
        return 1
    print("carry: .whl" + (" .gl" if gl else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
