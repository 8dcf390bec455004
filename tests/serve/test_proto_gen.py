"""The committed stubs in semore_runtime/proto_gen/ are exactly what tools/gen_proto.py makes from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "semore_runtime" / "proto_gen"


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_regenerated_stubs_are_byte_identical(tmp_path):
    pytest.importorskip("grpc_tools", reason="regenerating needs grpcio-tools")
    out = tmp_path / "proto_gen"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--out", str(out)], check=True, timeout=60
    )
    fresh, committed = _files(out), _files(COMMITTED)
    assert sorted(fresh) == sorted(committed), "files differ: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stubs drifted from protos/ ({stale}): run `make proto` and commit the result"


def test_stubs_import_from_the_package_path():
    from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc

    assert policy_pb2.DESCRIPTOR.package == "semore.v1"
    assert hasattr(policy_pb2_grpc, "PolicyServiceStub")
    assert (
        "semore_runtime.proto_gen.semore.v1 import policy_pb2" in Path(policy_pb2_grpc.__file__).read_text()
    )
