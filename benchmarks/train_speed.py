"""Training speed: Semore against the pixel baseline, at the reference and the quickstart settings.

Both encoders, each with the SAC learner and the DrQ-v2 learner, are timed side by side in one run
(rounds alternate between them, so machine noise hits all alike), on identical synthetic batches. Updates/s comes from the median update time;
env frames/s times collection as the trainer does it (render, plus the sim teacher's segmentation
render for Semore). Writes benchmarks/results/train_speed.json and prints a table.

    python -m benchmarks.train_speed [--rounds 5] [--updates 3]

On a GPU (benchmarks/gpu_train_speed.sh runs this on the device machine):

    python -m benchmarks.train_speed --device cuda --settings reference --encoders semore pixel \\
        --compile config --time-box 20 --trial-seconds 20 --json OUT/train_speed_gpu.json

--compile config compiles each encoder as its config says (encoder.compile); CUDA updates are
timed between synchronisations. --trial-seconds S also runs one real trial per encoder: the
trainer's own loop (collect, label, update, at the config's cadence) for S seconds after its first
--trial-warmup updates (compilation included before them), evaluations and checkpoints left out;
its frames/s is what one sweep trial trains at, alone on the machine. --time-box bounds each
measurement's seconds (warm-up and compilation aside); --set adds overrides to every config (tiny
sizes for a rehearsal). The JSON is rewritten after every measurement, so a run cut off keeps
what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

from devkit.batches import synthetic_batches
from devkit.update_timing import update_seconds
from training.agent import make_agent
from training.config import RunConfig, load_config
from training.envs import make_env
from training.teachers import make_teacher

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {
    "reference": ROOT / "configs/reference/cartpole_swingup.yaml",
    "quickstart": ROOT / "configs/quickstart.yaml",
}


# The pixel baseline: no teacher, and none of what reads one (the gate, compositing).
PIXEL = ["encoder.kind=pixel", "encoder.gate=false", "augment.composite=0", "teacher.kind=none"]
ENCODERS = {
    "semore": [],
    "pixel": PIXEL,
    "semore-drqv2": ["agent.kind=drqv2"],
    "pixel-drqv2": [*PIXEL, "agent.kind=drqv2"],
}
# One trial's loop, measured: no evaluation or checkpoint inside the measured window, no replay on disk.
TRIAL_FRAMES = 200_000
TRIAL = [
    f"train.frames={TRIAL_FRAMES}",
    f"train.eval_every_frames={TRIAL_FRAMES}",
    f"train.checkpoint_every_frames={TRIAL_FRAMES}",
    "train.video=false",
    "train.save_replay=false",
]


def configs(
    setting: str,
    compile_encoder: bool | None,
    device: str = "cpu",
    encoders: list[str] | None = None,
    extra: list[str] | None = None,
) -> dict[str, RunConfig]:
    """compile_encoder None: as each config says."""
    common = [f"device={device}"]
    if compile_encoder is not None:
        common.append(f"encoder.compile={str(compile_encoder).lower()}")
    return {
        kind: load_config(SETTINGS[setting], common + ENCODERS[kind] + (extra or []))
        for kind in (encoders or ENCODERS)
    }


def env_frames_per_second(config: RunConfig, steps: int, time_box: float | None = None) -> float:
    env = make_env(config.env, seed=0)
    teacher = make_teacher(config.teacher, config.env.id, torch.device("cpu"))
    rng = np.random.default_rng(0)
    step = env.reset()
    tic = time.perf_counter()
    done = 0
    while done < steps and (time_box is None or not done or time.perf_counter() - tic < time_box):
        step = env.step(env.from_unit(rng.uniform(-1, 1, env.action_dim)))
        if teacher is not None:
            teacher.annotate(env, step.frame)
        if step.last:
            step = env.reset()
        done += 1
    return done * config.env.action_repeat / (time.perf_counter() - tic)


class _TimeUp(Exception):
    pass


def trial_speed(config: RunConfig, seconds: float, warmup_updates: int, max_seconds: float) -> dict:
    """One trial's training loop, as semore-train runs it, for `seconds` after `warmup_updates`
    updates (at most `max_seconds` in all): frames/s and updates/s over that window."""
    from training.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="train_speed_") as folder:
        trainer = Trainer(config, Path(folder))
        samples: list[tuple[float, int, int]] = []  # (time, frames, updates) before each env step
        start = time.perf_counter()
        warm: list[int] = []  # index of the first sample past the warm-up
        env_step = trainer.env.step

        def step(action):
            now = time.perf_counter()
            samples.append((now, trainer.frames, trainer.agent.updates))
            if not warm and trainer.agent.updates >= warmup_updates:
                warm.append(len(samples) - 1)
            if now - start > max_seconds or (warm and now - samples[warm[0]][0] > seconds):
                raise _TimeUp
            return env_step(action)

        trainer.env.step = step
        try:
            trainer.run()
        except _TimeUp:
            pass
        finally:
            if trainer.progress is not None:
                trainer.progress.close()
            if trainer.labels is not None:
                trainer.labels.close()
            trainer.logger.close()
        if not samples:
            return {"frames_per_s": 0.0, "updates_per_s": 0.0, "warm": False}
        first = samples[warm[0]] if warm else samples[0]
        last = samples[-1]
        window = max(last[0] - first[0], 1e-9)
        result = {
            "frames_per_s": round((last[1] - first[1]) / window, 1),
            "updates_per_s": round((last[2] - first[2]) / window, 2),
            "seconds_measured": round(window, 1),
            "frames_measured": last[1] - first[1],
            "warm": bool(warm),  # False: the time ran out before the warm-up ended
            "seconds_to_warm": round(first[0] - start, 1),
            "frames": last[1],
            "updates": last[2],
            "seed_frames": config.train.seed_frames,
        }
    return result


def machine(device: torch.device) -> str:
    text = f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


def _compile_arg(value: str) -> bool | None:
    return {"true": True, "false": False, "config": None}[value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=3, help="updates per encoder per round")
    parser.add_argument("--env-steps", type=int, default=200)
    parser.add_argument(
        "--compile",
        nargs="?",
        const="true",
        default="false",
        choices=["true", "false", "config"],
        help="torch.compile the encoders (bare flag: true; config: as each config says)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--encoders", nargs="+", choices=list(ENCODERS), default=list(ENCODERS))
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, repeatable"
    )
    parser.add_argument(
        "--time-box", type=float, help="seconds each update or env measurement may take (warm-up aside)"
    )
    parser.add_argument(
        "--trial-seconds", type=float, default=0, help="also time one trial's loop per encoder (0: no)"
    )
    parser.add_argument("--trial-warmup", type=int, default=20, help="updates before a trial's timing starts")
    parser.add_argument("--trial-max-seconds", type=float, help="a trial's limit, warm-up included (3x)")
    parser.add_argument(
        "--out", "--json", dest="out", type=Path, default=ROOT / "benchmarks/results/train_speed.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device(args.device)
    compile_encoder = _compile_arg(args.compile)

    results: dict = {
        "machine": machine(device),
        "compile": {"true": True, "false": False}.get(args.compile, "config"),
    }
    if args.device != "cpu":
        results["device"] = args.device
    if args.set:
        results["overrides"] = args.set
    results["settings"] = {}

    def write() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    rows = []
    for setting in args.settings:
        config = configs(setting, compile_encoder, args.device, args.encoders, args.set)
        agents = {kind: make_agent(c, 1, device) for kind, c in config.items()}
        warmups: dict[str, float] = {}
        batches = synthetic_batches(config, 1)
        times = update_seconds(agents, batches, args.rounds, args.updates, args.time_box, warmups)
        del agents
        entry: dict = {}
        results["settings"][setting] = entry
        for kind, c in config.items():
            median = statistics.median(times[kind])
            entry[kind] = {
                "median_update_s": round(median, 4),
                "updates_per_s": round(1 / median, 2),
                "env_frames_per_s": None,
                "batch_size": c.agent.batch_size,
                "image_size": c.env.image_size,
            }
            if args.device != "cpu" or args.time_box is not None or compile_encoder is None:
                entry[kind] |= {
                    "compiled": c.encoder.compile,
                    "updates_timed": len(times[kind]),
                    "warmup_s": round(warmups[kind], 2),
                }
            rows.append((setting, kind, entry[kind]))
        if "semore" in entry and "pixel" in entry:
            entry["semore_over_pixel"] = round(
                entry["semore"]["median_update_s"] / entry["pixel"]["median_update_s"], 3
            )
            results[f"semore_over_pixel_{setting}"] = entry["semore_over_pixel"]
        if "pixel-drqv2" in entry and "pixel" in entry:
            entry["drqv2_over_sac_pixel"] = round(
                entry["pixel-drqv2"]["median_update_s"] / entry["pixel"]["median_update_s"], 3
            )
        write()
        for kind, c in config.items():
            fps = env_frames_per_second(c, args.env_steps, args.time_box)
            entry[kind]["env_frames_per_s"] = round(fps, 1)
            write()
        if args.trial_seconds > 0:
            trials = {}
            for kind in [k for k in ("semore", "pixel") if k in config] or list(config):
                c = configs(setting, compile_encoder, args.device, [kind], [*args.set, *TRIAL])[kind]
                limit = args.trial_max_seconds or 3 * args.trial_seconds
                trials[kind] = trial_speed(c, args.trial_seconds, args.trial_warmup, limit)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                entry[kind]["trial"] = trials[kind]
                results[f"trial_frames_per_s_{setting}"] = {k: t["frames_per_s"] for k, t in trials.items()}
                write()
                print(
                    f"{setting} {kind}: one trial trains at {trials[kind]['frames_per_s']:.1f} frames/s",
                    flush=True,
                )
            if "semore" in trials and "pixel" in trials and trials["pixel"]["frames_per_s"] > 0:
                entry["trial_semore_over_pixel_frames_per_s"] = round(
                    trials["semore"]["frames_per_s"] / trials["pixel"]["frames_per_s"], 3
                )
                write()

    write()
    print(
        f"\n{'setting':<11} {'encoder':<12} {'batch':>5} {'px':>4} {'update ms':>10} {'updates/s':>10} {'env frames/s':>13}"
    )
    for setting, kind, e in rows:
        print(
            f"{setting:<11} {kind:<12} {e['batch_size']:>5} {e['image_size']:>4} {1000 * e['median_update_s']:>10.1f} "
            f"{e['updates_per_s']:>10.2f} {e['env_frames_per_s']:>13.1f}"
        )
    for setting in args.settings:
        entry = results["settings"][setting]
        if "semore_over_pixel" in entry:
            print(f"semore / pixel update time, {setting}: {entry['semore_over_pixel']:.3f}x")
        if "drqv2_over_sac_pixel" in entry:
            print(f"drqv2 / sac update time (pixel encoder), {setting}: {entry['drqv2_over_sac_pixel']:.3f}x")
        for kind in ("semore", "pixel"):
            if "trial" in entry.get(kind, {}):
                t = entry[kind]["trial"]
                print(
                    f"one {kind} trial, {setting}: {t['frames_per_s']:.1f} frames/s, {t['updates_per_s']:.1f} updates/s"
                    f" (over {t['seconds_measured']} s after {t['seconds_to_warm']} s of warm-up)"
                )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
