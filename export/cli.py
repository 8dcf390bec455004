"""semore-export: a semore-train checkpoint to one ONNX policy file, verified against torch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import Field

from semore_runtime.options import CommandOptions, parse_command


class ExportOptions(CommandOptions):
    """Everything semore-export can be told; each field is one option."""

    checkpoint: Path = Field(description="the run's checkpoint, RUN/checkpoint.pt")
    out: Path = Field(description="policy.onnx to write")
    opset: int = Field(17, description="ONNX opset of the graph")
    fp16: bool = Field(False, description="fp16 weights (needs a CUDA provider)")


def main(argv: list[str] | None = None) -> int:
    args = parse_command(ExportOptions, "semore-export", __doc__.splitlines()[0], argv)
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
