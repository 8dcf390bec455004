"""benchmarks/encoder_probe.py: each stack comes with its frames' foreground, a composited view keeps
exactly those pixels, and a compositing variant is read on clean and composited held-out frames."""

from __future__ import annotations

import json

import numpy as np
import torch

from benchmarks.encoder_probe import CONFIG, collect, compositor
from tests.helpers.training import run_benchmark
from training.backgrounds import procedural_backgrounds
from training.config import load_config
from training.networks import preprocess


def test_each_stack_comes_with_its_frames_foreground_and_compositing_keeps_it():
    x, fg, y = collect(30, seed=0)
    assert fg.shape == x.shape[:4] and fg.dtype == torch.bool and y.shape == (30, 5)
    assert 0 < fg.float().mean() < 0.2  # the cart and pole, a small part of the frame
    # The masks roll with the frames: within an episode, stack i+1's older frames are stack i's newer.
    torch.testing.assert_close(fg[1:, :-1], fg[:-1, 1:])
    config = load_config(CONFIG)
    frames = preprocess(x)
    composited = compositor(config, procedural_backgrounds(4, 2 * config.env.image_size, seed=0))(
        frames, fg.float()
    )
    keep = fg.repeat_interleave(3, dim=1)
    torch.testing.assert_close(composited[keep], frames[keep])
    assert (composited[~keep] != frames[~keep]).float().mean() > 0.9


def test_a_compositing_variant_is_read_on_clean_and_on_composited_frames(tmp_path):
    out = tmp_path / "probe.json"
    run_benchmark(
        "encoder_probe", "--variants", "pixel", "pixel, composite", "--frames", "40", "--steps", "2", "--out", str(out),
    )  # fmt: skip
    variants = json.loads(out.read_text())["variants"]
    assert set(variants) == {"pixel", "pixel, composite"}
    for entry in variants.values():
        (point,) = entry["curve"]
        assert point["step"] == 2
        for name in ("x", "cos", "sin", "x_dot", "theta_dot"):
            assert np.isfinite(point[name]) and np.isfinite(point[f"composited {name}"])
