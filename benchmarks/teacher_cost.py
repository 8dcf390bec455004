"""Teacher cost: CLIP grounding throughput, the VLM's call rate, and how much each teacher slows training.

No weights can be downloaded here, so every model has random weights at its real size
(devkit/random_models.py): the compute is the real models', the answers are noise.
The VLM is Qwen2-VL-2B-Instruct's architecture; random weights never say "stop", so each
answer runs to max_new_tokens, an upper bound on a real answer's cost.

Slowdown: the quickstart config trains the same number of frames with each teacher, in rounds
that alternate the teachers in this process; the median over rounds of wall time per training
frame (evaluation excluded), over `none`'s.

    python -m benchmarks.teacher_cost [--frames 3000] [--repeats 3] [--device cuda]
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
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import torch

from devkit.random_models import save_random_qwen2_vl
from training.config import ClipConfig, VlmConfig, load_config
from training.teachers.clip import ClipGrounder
from training.teachers.vlm import VisionLanguageModel
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs/quickstart.yaml"
VLM_TOKENS = 16  # a short list answer, "cart, pole, track", plus the end token
PROMPT = "The task in this image is balancing a pole on a cart. List the objects that affect this task."


def clip_frames_per_second(
    model: str, batch: int, rounds: int, image_size: int, device: torch.device
) -> float:
    grounder = ClipGrounder(ClipConfig(model=model, pretrained=None), 12, device)
    frames = np.random.default_rng(0).integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
    grounder.ground(frames, ["cart", "pole"])  # warm-up, text embeddings
    times = []
    for _ in range(rounds):
        tic = time.perf_counter()
        grounder.ground(frames, ["cart", "pole"])
        times.append(time.perf_counter() - tic)
    return batch / statistics.median(times)


def vlm_call_seconds(vlm: VisionLanguageModel, batch: int, rounds: int) -> float:
    frames = list(np.random.default_rng(0).integers(0, 256, (batch, 48, 48, 3), dtype=np.uint8))
    times = []
    for _ in range(rounds):
        tic = time.perf_counter()
        vlm.ask(frames, PROMPT)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def train_seconds_per_frame(name: str, overrides: list[str], frames: int, out: Path, device: str) -> dict:
    settings = [
        f"device={device}",
        f"train.frames={frames}",
        "train.seed_frames=400",  # mostly update-phase frames, as in a long run
        f"train.eval_every_frames={frames}",
        "train.eval_episodes=1",
        f"train.checkpoint_every_frames={frames}",
        "train.save_replay=false",
        "train.video=false",
        "train.stop_at_return=null",
    ]
    config = load_config(QUICKSTART, settings + overrides)
    summary = Trainer(config, out / name.replace(":", "-")).run()
    train_seconds = summary["seconds"] - summary["eval_seconds"]
    row = {"seconds_per_frame": train_seconds / summary["frames"], "train_seconds": round(train_seconds, 1)}
    for key in ("teacher_seconds", "teacher_wait_seconds", "teacher_share", "vlm_calls"):
        if key in summary:
            row[key] = summary[key]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=3000, help="training frames per teacher")
    parser.add_argument("--rounds", type=int, default=5, help="timed CLIP batches per model")
    parser.add_argument("--repeats", type=int, default=3, help="training runs per teacher (median kept)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/teacher_cost.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    image_size = load_config(QUICKSTART).env.image_size
    results: dict = {
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "weights": "random (no model hub); real architectures and sizes",
        "clip_frames_per_s": {},
    }

    for model in ("ViT-S-32", "ViT-B-32"):
        fps = clip_frames_per_second(model, 32, args.rounds, image_size, device)
        results["clip_frames_per_s"][model] = round(fps, 1)
        print(f"clip {model}: {fps:.1f} frames/s at batch 32")

    with tempfile.TemporaryDirectory(prefix="semore-teacher-cost-") as tmp:
        tmp = Path(tmp)
        tic = time.perf_counter()
        vlm_folder = save_random_qwen2_vl(tmp / "qwen2-vl-2b", "2b", 224 * 224, torch.float16)
        print(f"built a random Qwen2-VL-2B in {time.perf_counter() - tic:.0f} s")
        results["vlm"] = {
            "model": f"Qwen2-VL-2B architecture, random weights, {'fp16' if device.type == 'cuda' else 'fp32'}, 224 px",
            "max_new_tokens": VLM_TOKENS,
        }
        generation = {"max_new_tokens": VLM_TOKENS}
        vlm = VisionLanguageModel(VlmConfig(model=str(vlm_folder), generation=generation), device)
        for batch in (1, 4):
            seconds = vlm_call_seconds(vlm, batch, 2 if batch == 1 else 1)
            results["vlm"][f"batch_{batch}"] = {
                "seconds_per_call": round(seconds, 2),
                "frames_per_s": round(batch / seconds, 3),
            }
            print(f"vlm batch {batch}: {seconds:.1f} s per call ({batch / seconds:.3f} frames/s)")
        del vlm  # the vlm-clip run below loads its own copy

        clip_b = ["teacher.clip.pretrained=null"]
        runs = {
            "none": ["teacher.kind=none"],
            "sim": [],
            "clip": ["teacher.kind=clip", "teacher.phrases=[cart, pole]", *clip_b],
            "clip:ViT-S-32": [
                "teacher.kind=clip",
                "teacher.phrases=[cart, pole]",
                *clip_b,
                "teacher.clip.model=ViT-S-32",
            ],
            "vlm-clip": [
                "teacher.kind=vlm-clip",
                *clip_b,
                f"teacher.vlm.model={vlm_folder}",
                f"teacher.vlm.generation.max_new_tokens={VLM_TOKENS}",
                "teacher.vlm.cache=null",
            ],
        }
        samples: dict[str, list[dict]] = {name: [] for name in runs}
        for repeat in range(args.repeats):  # rounds alternate teachers, so noise hits all alike
            for name, overrides in runs.items():
                row = train_seconds_per_frame(
                    name, overrides, args.frames, tmp / f"runs{repeat}", args.device
                )
                samples[name].append(row)
                print(f"trained with {name}: {row}")
    # The median run of each teacher (by seconds per frame), with every run's figure alongside.
    training = {}
    for name, rows in samples.items():
        rows = sorted(rows, key=lambda r: r["seconds_per_frame"])
        training[name] = rows[(len(rows) - 1) // 2] | {
            "all_seconds_per_frame": [r["seconds_per_frame"] for r in rows]
        }
    base = training["none"]["seconds_per_frame"]
    results["training"] = {
        "frames": args.frames,
        "repeats": args.repeats,
        "config": "configs/quickstart.yaml",
        "runs": training,
    }
    results["slowdown"] = {name: round(row["seconds_per_frame"] / base, 3) for name, row in training.items()}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\n{'teacher':<15} {'ms/frame':>9} {'slowdown':>9} {'teacher s':>10} {'waited':>7} {'VLM calls':>10}"
    )
    for name, row in training.items():
        print(
            f"{name:<15} {1000 * row['seconds_per_frame']:>9.1f} {results['slowdown'][name]:>8.2f}x "
            f"{row.get('teacher_seconds', 0):>10.1f} {row.get('teacher_share', 0):>6.1%} {row.get('vlm_calls', '-'):>10}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
