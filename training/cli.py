"""semore-train: train a Semore (or baseline) policy from pixels."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from training.config import ConfigError, load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="semore-train", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML run config (configs/*.yaml); defaults if omitted")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override one field, e.g. --set agent.lr=3e-4 (repeatable)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="run folder: config, logs, checkpoint, video, curve"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
