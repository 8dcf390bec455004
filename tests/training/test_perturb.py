"""Perturbations: image ones on any frames; scene ones on real dm_control renders, changing the
pixels they should and only those."""

import re
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from training.config import EnvConfig
from training.envs import make_env
from training.perturb import PERTURBATIONS, make_perturbation

EVAL_VIDEOS = Path(__file__).resolve().parents[2] / "benchmarks/data/eval_videos"
IMAGE = ["brightness", "color-jitter", "noise", "occlusion"]
SCENE = [name for name in PERTURBATIONS if name not in IMAGE] + [f"video={EVAL_VIDEOS}"]


@pytest.fixture
def stack():
    rng = np.random.default_rng(0)
    return rng.integers(60, 200, (3, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", IMAGE)
def test_shape_and_dtype_are_kept_and_frames_change(name, stack):
    out = make_perturbation(name, seed=1)(None, stack)
    assert out.shape == stack.shape and out.dtype == np.uint8
    assert (out != stack).any()


def test_brightness_contrast_moves_the_mean_and_shrinks_the_spread(stack):
    out = make_perturbation("brightness", 1)(None, stack).astype(float)
    assert abs(out.mean() - stack.mean()) > 20
    assert out.std() < stack.std()


def test_a_lower_level_perturbs_less(stack):
    strong = np.abs(make_perturbation("brightness", 1, 1.0)(None, stack).astype(float) - stack).mean()
    weak = np.abs(make_perturbation("brightness", 1, 0.25)(None, stack).astype(float) - stack).mean()
    assert 0 < weak < 0.5 * strong
    with pytest.raises(ValueError, match="perturb-level"):
        make_perturbation("brightness", 1, 1.5)


def test_color_jitter_scales_each_channel_differently(stack):
    out = make_perturbation("color-jitter", 2)(None, stack).astype(float)
    ratios = out.mean(axis=(0, 1, 2)) / stack.mean(axis=(0, 1, 2))
    assert np.ptp(ratios) > 0.01


def test_noise_is_zero_mean_and_fresh_each_call(stack):
    noise = make_perturbation("noise", 3)
    a, b = noise(None, stack), noise(None, stack)
    assert abs(a.astype(float).mean() - stack.mean()) < 1.0
    assert (a != b).any()


def test_occlusion_is_one_fixed_grey_patch(stack):
    occlude = make_perturbation("occlusion", 4)
    a, b = occlude(None, stack), occlude(None, stack)
    np.testing.assert_array_equal(a, b)
    changed = (a != stack).any(axis=(0, 3))
    rows, cols = np.nonzero(changed)
    assert 0 < changed.sum() <= 8 * 8
    assert (a[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] == 127).all()


def test_unknown_perturbation_lists_the_choices():
    with pytest.raises(ValueError, match="occlusion"):
        make_perturbation("rain", 0)


def clean_and_perturbed(name: str, task: str = "cartpole-balance", seed: int = 3):
    """The same physics state rendered by a clean env and by a perturbed one, plus the clean masks."""
    config = EnvConfig(id=f"dmc:{task}", image_size=64, render_quality="fast")
    clean, perturbed = make_env(config, seed=0), make_env(config, seed=0)
    perturbed.perturb(make_perturbation(name, seed))
    clean.reset(), perturbed.reset()
    for _ in range(3):
        action = np.full(clean.action_dim, 0.3)
        a, b = clean.step(action), perturbed.step(action)
    background = clean.background_mask()
    floor = clean.object_mask([clean.physics.model.id2name(g, "geom") for g in clean.floor_geoms()])
    return a.frame, b.frame, background, floor


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(-1) > 2


def test_body_colors_change_object_pixels_only():
    clean, perturbed, background, _ = clean_and_perturbed("colors-bodies")
    diff = changed(clean, perturbed)
    assert diff[~background].mean() > 0.5  # most body pixels
    assert not diff[background].any()


def test_floor_colors_change_floor_pixels_only():
    clean, perturbed, _, floor = clean_and_perturbed("colors-floor")
    diff = changed(clean, perturbed)
    assert diff[floor].mean() > 0.5 and not diff[~floor].any()


def test_sky_colors_change_sky_pixels_only():
    clean, perturbed, background, floor = clean_and_perturbed("colors-sky")
    sky = background & ~floor
    diff = changed(clean, perturbed)
    assert diff[sky].mean() > 0.5 and not diff[~sky].any()


def test_background_swap_changes_background_pixels_only_and_moves():
    config = EnvConfig(id="dmc:cartpole-balance", image_size=64, render_quality="fast")
    clean, swapped = make_env(config, seed=0), make_env(config, seed=0)
    swapped.perturb(make_perturbation("background", 5))
    frames = []
    for env in (clean, swapped):
        env.reset()
        frames.append([env.step(np.zeros(env.action_dim)).frame for _ in range(2)])
    background = clean.background_mask()
    diff = changed(frames[0][1], frames[1][1])
    assert diff[background].mean() > 0.5 and not diff[~background].any()
    moved = changed(frames[1][0], frames[1][1]) & background
    assert moved.mean() > 0.05  # the texture drifts from frame to frame


def played(spec: str, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[steps + 1] frames of a clean env and of one under `spec`, both doing nothing, and the clean
    background masks."""
    config = EnvConfig(id="dmc:cartpole-balance", image_size=64, render_quality="fast")
    clean, perturbed = make_env(config, seed=0), make_env(config, seed=0)
    perturbed.perturb(make_perturbation(spec, 5))
    frames, masks = [[clean.reset().frame], [perturbed.reset().frame]], [clean.background_mask()]
    for _ in range(steps):
        frames[0].append(clean.step(np.zeros(clean.action_dim)).frame)
        frames[1].append(perturbed.step(np.zeros(perturbed.action_dim)).frame)
        masks.append(clean.background_mask())
    return np.stack(frames[0]), np.stack(frames[1]), np.stack(masks)


def test_a_video_plays_over_the_background_one_frame_per_rendered_frame(tmp_path):
    greys = [np.full((48, 48, 3), 25 * i, np.uint8) for i in range(10)]  # frame i is flat grey 25 i
    imageio.mimsave(tmp_path / "greys.mp4", greys, fps=10, macro_block_size=1)
    clean, perturbed, background = played(f"video={tmp_path}", steps=11)
    np.testing.assert_array_equal(perturbed[~background], clean[~background])
    shown = [frame[mask] for frame, mask in zip(perturbed, background, strict=True)]
    assert all(np.ptp(pixels) <= 6 for pixels in shown)  # each frame's background is one grey
    index = [round(pixels.mean() / 25) for pixels in shown]
    assert all((b - a) % 10 == 1 for a, b in zip(index, index[1:], strict=False)), index  # in order, looping


def test_an_image_drifts_slowly_over_the_background(tmp_path):
    texture = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    imageio.imwrite(tmp_path / "noise.png", texture)
    clean, perturbed, background = played(f"video={tmp_path}", steps=12)
    np.testing.assert_array_equal(perturbed[~background], clean[~background])
    assert changed(clean[0], perturbed[0])[background[0]].mean() > 0.9
    # The last frame shows the first one's picture a few pixels on: one small shift matches it exactly.
    first, last = perturbed[0], perturbed[-1]
    rows, cols = np.nonzero(background[-1][4:-4, 4:-4])
    rows, cols = rows + 4, cols + 4

    def aligned(dy: int, dx: int) -> bool:
        seen = background[0][rows + dy, cols + dx]  # background in both frames
        return (last[rows, cols][seen] == first[rows + dy, cols + dx][seen]).all()

    shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if aligned(dy, dx)]
    assert len(shifts) == 1 and shifts != [(0, 0)], shifts


def test_the_committed_evaluation_videos_play():
    clean, perturbed, background = played(f"video={EVAL_VIDEOS}", steps=2)
    assert changed(clean[-1], perturbed[-1])[background[-1]].mean() > 0.5
    assert changed(perturbed[-2], perturbed[-1])[background[-1]].mean() > 0.05


def test_video_needs_a_folder_of_videos_or_images(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"--perturb: no folder at {tmp_path / 'nowhere'}")):
        make_perturbation(f"video={tmp_path / 'nowhere'}", 0)
    with pytest.raises(ValueError, match="--perturb: .* holds no image or video"):
        make_perturbation(f"video={tmp_path}", 0)
    with pytest.raises(ValueError, match="--perturb: unknown perturbation 'video=' .*video=DIR"):
        make_perturbation("video=", 0)


def test_camera_shift_moves_the_view_but_keeps_the_objects_in_it():
    clean, perturbed, background, _ = clean_and_perturbed("camera")
    assert changed(clean, perturbed).mean() > 0.05
    config = EnvConfig(id="dmc:cartpole-balance", image_size=64, render_quality="fast")
    env = make_env(config, seed=0)
    env.perturb(make_perturbation("camera", 3))
    env.reset()
    assert env.object_mask(["cart", "pole_1"]).sum() > 0.5 * (~background).sum()


@pytest.mark.parametrize("name", SCENE)
def test_scene_perturbations_refuse_an_env_without_a_scene(name):
    env = make_env(EnvConfig(id="gym:CarRacing-v3", image_size=32), seed=0)
    with pytest.raises(ValueError, match="dm_control"):
        env.perturb(make_perturbation(name, 0))
