"""tools/ort_cuda_pieces.py on tiny real bundles: wheels stored uncompressed stay valid, pieces
join back into the same wheels, and a missing or corrupt piece is refused by name before anything
is unpacked. The built bundle (.ort/, about 200 MiB) is checked when it is there."""

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from tests.helpers.training import ROOT
from tests.helpers.wheels import make_wheel
from tools.gpu_bundle import DEVICE, LIMIT_MIB, normalize, requirement_name, tree_bytes
from tools.ort_cuda_pieces import ORT, SERVE, PiecesError, check, ignored, join, pack, split, store

KIB = 1024


def _bundle(tmp_path, max_piece: int = 48 * KIB):
    """Two wheels (one of incompressible bytes, so that the archive spans pieces), stored, packed
    and split as `build` does: (their original bytes by name, manifest, pieces folder)."""
    wheels = [
        make_wheel(tmp_path / "wheels", "probe_data", {"probe_data/blob.bin": os.urandom(150 * KIB)}),
        make_wheel(tmp_path / "wheels", "probe_code", {"probe_code/__init__.py": b"VALUE = 42\n"}),
    ]
    (tmp_path / "stored").mkdir()
    stored = [store(w, tmp_path / "stored") for w in wheels]
    pack(stored, tmp_path / "bundle.tar.xz")
    manifest = split(tmp_path / "bundle.tar.xz", tmp_path / "pieces", max_piece, [w.name for w in stored])
    return {w.name: w.read_bytes() for w in stored}, manifest, tmp_path / "pieces"


def _carry(pieces, device, k: int) -> None:
    """What device call k does with the folder it carried: copies it into the pieces folder."""
    device.mkdir(exist_ok=True)
    for f in (pieces / f"p{k}").iterdir():
        shutil.copy(f, device / f.name)


def test_a_stored_wheel_holds_the_same_files_uncompressed_and_its_record_still_matches(tmp_path):
    wheel = make_wheel(tmp_path / "in", "probe", {"probe/__init__.py": b"x = 1\n" * 100})
    (tmp_path / "out").mkdir()
    copy = store(wheel, tmp_path / "out")
    with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(copy) as b:
        assert a.namelist() == b.namelist()
        assert {i.compress_type for i in b.infolist()} == {zipfile.ZIP_STORED}
        assert all(a.read(n) == b.read(n) for n in a.namelist())
        record = b.read("probe-1.0.dist-info/RECORD").decode().splitlines()
        data = b.read("probe/__init__.py")
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    assert f"probe/__init__.py,sha256={digest},{len(data)}" in record


def test_pieces_carried_one_call_at_a_time_join_into_the_same_wheels(tmp_path):
    originals, manifest, pieces = _bundle(tmp_path)
    count = len(manifest["pieces"])
    assert count >= 3, "the incompressible wheel spans several pieces"
    sizes = [p["bytes"] for p in manifest["pieces"]]
    assert max(sizes) <= 48 * KIB and max(sizes) - min(sizes) <= 1 and sum(sizes) == manifest["bytes"]
    device = tmp_path / "device"
    for k in range(1, count + 1):
        _carry(pieces, device, k)
        _, missing = check(device)
        assert missing == [p["name"] for p in manifest["pieces"][k:]]
    wheels = join(device, tmp_path / "joined")
    assert {w.name: w.read_bytes() for w in wheels} == originals


def test_a_missing_or_corrupt_piece_is_named_and_nothing_is_unpacked(tmp_path):
    _, manifest, pieces = _bundle(tmp_path)
    device, joined = tmp_path / "device", tmp_path / "joined"
    for k in range(1, len(manifest["pieces"]) + 1):
        if k != 2:
            _carry(pieces, device, k)
    second = manifest["pieces"][1]["name"]
    with pytest.raises(PiecesError, match=f"missing {second} of"):
        join(device, joined)

    _carry(pieces, device, 2)
    blob = bytearray((device / second).read_bytes())
    blob[100] ^= 0xFF  # damaged in transit: the same size, other bytes
    (device / second).write_bytes(bytes(blob))
    run = subprocess.run(
        [sys.executable, "tools/ort_cuda_pieces.py", "join", str(device), "--out", str(joined)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1 and f"{device / second} is corrupt" in run.stderr, run.stderr
    assert not joined.exists() or not any(joined.iterdir())


def test_the_device_lacks_or_may_hold_too_old_what_serving_needs_pinned_as_the_project_pins_it():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split() if "==" in line)
    pins = {normalize(n): v for n, v in pins.items()}
    carried = dict(w.split("==") for w in [ORT, *SERVE])
    for name in ("grpcio", "protobuf", "grpcio-health-checking", "grpcio-reflection", "pydantic"):
        assert carried[name] == pins[name], name


def test_every_package_semore_serve_imports_is_carried_or_on_the_device():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    carried = {requirement_name(w) for w in [ORT, *SERVE]}
    for need in [*project["dependencies"], *project["optional-dependencies"]["serve"]]:
        assert requirement_name(need) in carried | DEVICE, need


def test_the_bundle_folders_count_as_ignored_before_they_are_made():
    # In a fresh clone none of them exists yet; `build` refuses a folder that would travel.
    for name in (".ort", ".whl", ".gl"):
        assert ignored(ROOT / name), name
    assert not ignored(ROOT / "tools")


def test_the_built_bundle_is_intact_and_each_piece_fits_one_call():
    folders = sorted((ROOT / ".ort").glob("p[0-9]*"))
    if not folders:
        pytest.skip("no .ort/: python tools/ort_cuda_pieces.py build makes it")
    for folder in folders:  # each piece in place, against the manifest beside it
        manifest, missing = check(folder)
        assert len(missing) == len(manifest["pieces"]) - 1, f"{folder} holds one piece"
    assert len(folders) == len(manifest["pieces"])
    largest = max(p["bytes"] for p in manifest["pieces"])
    assert largest + tree_bytes() <= LIMIT_MIB * 2**20, "a call carries its piece and the working tree"
    assert any(name.startswith("onnxruntime_gpu-") for name in manifest["wheels"])
