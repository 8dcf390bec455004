"""semore-train: train a Semore (or baseline) policy from pixels."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import Field

from semore_runtime.options import CommandOptions, parse_command
from training.config import ConfigError, load_config


class TrainOptions(CommandOptions):
    """Everything semore-train's command line says; the run's settings are in the config it names."""

    config: Path | None = Field(None, description="YAML run config (configs/*.yaml); defaults if omitted")
    overrides: list[str] = Field(
        default_factory=list,
        description="override one field, e.g. --set agent.lr=3e-4 (repeatable)",
        json_schema_extra={"flag": "--set", "repeat": True, "metavar": "PATH=VALUE"},
    )
    out: Path = Field(description="run folder: config, logs, checkpoint, video, curve")
    resume: bool = Field(False, description="continue the run in --out from its last checkpoint")


def main(argv: list[str] | None = None) -> int:
    args = parse_command(TrainOptions, "semore-train", __doc__.splitlines()[0], argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"semore-train: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("MUJOCO_GL", "egl")
    from training.trainer import Trainer  # torch and the simulators load only for a valid config

    try:
        trainer = Trainer(config, args.out, resume=args.resume)
    except (FileExistsError, ValueError, RuntimeError) as exc:
        print(f"semore-train: {exc}", file=sys.stderr)
        return 2
    summary = trainer.run()
    out = args.out
    print(
        f"\nbest evaluation return {summary['best_return']} after {summary['frames']} frames, {summary['seconds']:.0f} s"
    )
    if "teacher_seconds" in summary:
        vlm = f"; VLM asked about {summary['vlm_calls']} frames" if "vlm_calls" in summary else ""
        print(
            f"teacher:    {summary['teacher_seconds']:.0f} s labelling, training waited "
            f"{summary['teacher_share']:.1%} of wall time for it{vlm}"
        )
    print(f"checkpoint: {out / 'checkpoint.pt'}")
    video = next((out / name for name in ("eval.mp4", "eval.gif") if (out / name).exists()), None)
    print(f"video:      {video or 'none (train.video is off)'}")
    print(
        f"curve:      {out / 'curve.png'}  (data: {out / 'summary.json'}, logs: {out}/*.csv, TensorBoard: {out / 'tb'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
