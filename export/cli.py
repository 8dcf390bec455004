"""semore-export: a semore-train checkpoint to one ONNX policy file, verified against torch."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semore-export", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="RUN/checkpoint.pt")
    parser.add_argument("--out", type=Path, required=True, help="policy.onnx to write")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--fp16", action="store_true", help="fp16 weights (needs a CUDA provider)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from export.onnx_export import ParityError, export_checkpoint
    from training.checkpoint import CheckpointError

    try:
        report = export_checkpoint(args.checkpoint, args.out, args.opset, args.fp16)
    except (FileNotFoundError, CheckpointError, ParityError, RuntimeError) as exc:
        print(f"semore-export: {exc}", file=sys.stderr)
        return 1
    size = report.path.stat().st_size / 1e6
    print(f"wrote {report.path} ({size:.1f} MB, {report.spec.encoder_kind} encoder, {report.spec.env_id})")
    print(
        f"parity vs torch on {report.provider}: max |diff| {report.worst:.2e} (tolerance {report.tolerance:.0e})"
    )
    for name, diff in report.max_abs_diff.items():
        print(f"  {name:<11} {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
