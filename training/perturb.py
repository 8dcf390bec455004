"""Visual perturbations for generalization checks, each with a seed and a level in (0, 1].

Two kinds, after the published suites for the Control Suite:
- image perturbations change each rendered frame: brightness and contrast, colour gains, sensor
  noise, an occluding patch;
- scene perturbations change the MuJoCo scene (dm_control envs), as the DMControl Generalization
  Benchmark and the Distracting Control Suite do: random colours of the bodies, the floor and the
  sky through the model; the background (sky and floor pixels, found by a segmentation render)
  replaced by a procedural texture that moves every frame, or by the user's own videos or images
  (`video=DIR`, as DMControl-GB's video_easy and video_hard); a small shift of the camera pose.

Parameters are drawn once per evaluation from the seed (a scene that changed stays changed);
sensor noise and the moving background change with every frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.backgrounds import is_video, media_files, read_media

if TYPE_CHECKING:
    from training.envs import PixelEnv

FrameFn = Callable[["PixelEnv | None", np.ndarray], np.ndarray]


@dataclass
class Perturbation:
    """`scene` changes the env once when attached; `episode` runs as each episode starts, before its
    first frame; `frame` alters every rendered frame (or stack)."""

    frame: FrameFn | None = None
    scene: Callable[[PixelEnv], None] | None = None
    needs_scene: bool = False  # reads or changes the simulator's scene: dm_control envs only
    episode: Callable[[PixelEnv], None] | None = None

    def __call__(self, env: PixelEnv | None, frames: np.ndarray) -> np.ndarray:
        return frames if self.frame is None else self.frame(env, frames)


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255).astype(np.uint8)


def brightness_contrast(rng: np.random.Generator, level: float) -> Perturbation:
    sign, shift, contrast = rng.choice([-1.0, 1.0]), 40.0 * level, 1.0 - 0.4 * level

    def frame(env: PixelEnv | None, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        mean = x.mean(axis=(-3, -2, -1), keepdims=True)
        return _clip((x - mean) * contrast + mean + sign * shift)

    return Perturbation(frame)


def color_jitter(rng: np.random.Generator, level: float) -> Perturbation:
    gains = rng.uniform(1 - 0.3 * level, 1 + 0.3 * level, 3).astype(np.float32)
    return Perturbation(lambda env, x: _clip(x.astype(np.float32) * gains))


def gaussian_noise(rng: np.random.Generator, level: float) -> Perturbation:
    return Perturbation(lambda env, x: _clip(x.astype(np.float32) + rng.normal(0.0, 20.0 * level, x.shape)))


def occlusion(rng: np.random.Generator, level: float) -> Perturbation:
    state: dict[str, tuple[int, int, int]] = {}

    def frame(env: PixelEnv | None, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[-3:-1]
        if "patch" not in state:
            side = max(1, int(round(0.25 * level * min(h, w))))
            state["patch"] = (side, int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)))
        side, top, left = state["patch"]
        out = x.copy()
        out[..., top : top + side, left : left + side, :] = 127
        return out

    return Perturbation(frame)


def _towards(original: np.ndarray, target: np.ndarray, level: float) -> np.ndarray:
    return (1.0 - level) * original + level * target


def body_colors(rng: np.random.Generator, level: float) -> Perturbation:
    def scene(env: PixelEnv) -> None:
        model = env.physics.model
        for geom in env.body_geoms():
            material = model.geom_matid[geom]
            rgba = model.mat_rgba[material] if material >= 0 else model.geom_rgba[geom]
            model.geom_rgba[geom, :3] = _towards(rgba[:3], rng.uniform(0, 1, 3), level)
            model.geom_matid[geom] = -1  # the geom's own colour now counts

    return Perturbation(scene=scene, needs_scene=True)


def floor_colors(rng: np.random.Generator, level: float) -> Perturbation:
    def scene(env: PixelEnv) -> None:
        model = env.physics.model
        for material in {int(model.geom_matid[g]) for g in env.floor_geoms()} - {-1}:
            # A textured material's colour multiplies its texture (the floor's grid).
            model.mat_rgba[material, :3] = _towards(model.mat_rgba[material, :3], rng.uniform(0, 1, 3), level)

    return Perturbation(scene=scene, needs_scene=True)


def sky_colors(rng: np.random.Generator, level: float) -> Perturbation:
    def scene(env: PixelEnv) -> None:
        import mujoco

        physics = env.physics
        model = physics.model
        for tex in np.flatnonzero(model.tex_type == mujoco.mjtTexture.mjTEXTURE_SKYBOX):
            start = model.tex_adr[tex]
            size = model.tex_width[tex] * model.tex_height[tex] * model.tex_nchannel[tex]
            pixels = (
                model.tex_data[start : start + size].reshape(-1, model.tex_nchannel[tex]).astype(np.float32)
            )
            tinted = pixels[:, :3].mean(1, keepdims=True) * rng.uniform(0.2, 1.8, 3)
            pixels[:, :3] = _towards(pixels[:, :3], tinted, level)
            model.tex_data[start : start + size] = _clip(pixels).ravel()
            with physics.contexts.gl.make_current() as ctx:  # the GPU keeps its own copy
                ctx.call(mujoco.mjr_uploadTexture, model.ptr, physics.contexts.mujoco.ptr, tex)

    return Perturbation(scene=scene, needs_scene=True)


def colors(rng: np.random.Generator, level: float) -> Perturbation:
    parts = [body_colors(rng, level), floor_colors(rng, level), sky_colors(rng, level)]

    def scene(env: PixelEnv) -> None:
        for part in parts:
            part.scene(env)

    return Perturbation(scene=scene, needs_scene=True)


def moving_background(rng: np.random.Generator, level: float) -> Perturbation:
    """Sky and floor pixels take a drifting pattern of three coloured plane waves."""
    waves = rng.uniform(-1, 1, (3, 2)) * 6.0  # cycles across the frame, in y and x
    speeds = rng.uniform(0.05, 0.2, 3)  # cycles per frame
    palette = rng.uniform(0, 255, (3, 3)).astype(np.float32)
    phases = rng.uniform(0, 1, 3)
    count = [0]

    def frame(env: PixelEnv | None, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[:2]
        yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
        t = count[0]
        count[0] += 1
        weights = [
            0.5 + 0.5 * np.sin(2 * np.pi * (k[0] * yy + k[1] * xx + s * t + p))
            for k, s, p in zip(waves, speeds, phases, strict=True)
        ]
        pattern = sum(wgt[..., None] * c for wgt, c in zip(weights, palette, strict=True)) / 1.5
        return _over_background(env, x, pattern, level)

    return Perturbation(frame, needs_scene=True)


def _over_background(env: PixelEnv, x: np.ndarray, pattern: np.ndarray, level: float) -> np.ndarray:
    """The frame with its sky and floor pixels moved towards `pattern` ([H, W, 3])."""
    background = env.background_mask()[..., None]
    return _clip(np.where(background, _towards(x.astype(np.float32), pattern, level), x))


def _bounce(position: float, span: int) -> int:
    """A position moving steadily along [0, span] and turning back at each end (a triangle wave)."""
    return round(span - abs(position % (2 * span) - span)) if span else 0


def video_background(folder: Path, rng: np.random.Generator, level: float) -> Perturbation:
    """Sky and floor pixels show the folder's videos and images. Each episode draws one file: a
    video plays one frame per rendered frame from a random start, looping; an image, read a quarter
    larger than the frame, drifts across it by a quarter pixel per frame, turning at its edges."""
    files = media_files(folder, "--perturb")
    read: dict[Path, np.ndarray] = {}  # each file once, at the env's frame size
    state: dict = {}

    def episode(env: PixelEnv) -> None:
        path = files[rng.integers(len(files))]
        size = env.frame_shape[0]
        video = is_video(path)
        if path not in read:
            read[path] = read_media(path, size if video else size + max(1, size // 4))
        clip = read[path]
        span = clip.shape[1] - size
        state.update(
            clip=clip,
            t=int(rng.integers(len(clip))),
            start=rng.uniform(0, span, 2),
            velocity=0.0 if video else 0.25 * rng.choice([-1.0, 1.0], 2),
        )

    def frame(env: PixelEnv | None, x: np.ndarray) -> np.ndarray:
        if not state:  # attached in the middle of an episode
            episode(env)
        clip, t = state["clip"], state["t"]
        state["t"] += 1
        h, w = x.shape[:2]
        top, left = (_bounce(p, clip.shape[1] - h) for p in state["start"] + state["velocity"] * t)
        texture = clip[t % len(clip), top : top + h, left : left + w]
        return _over_background(env, x, texture.astype(np.float32), level)

    return Perturbation(frame, needs_scene=True, episode=episode)


def camera_shift(rng: np.random.Generator, level: float) -> Perturbation:
    """Moves the camera by 0.1-0.2 m and turns it by 5 degrees (times the level), once."""

    def scene(env: PixelEnv) -> None:
        import mujoco

        model = env.physics.model
        cam = env.camera
        direction = rng.normal(size=3)
        shift = 0.2 * level * rng.uniform(0.5, 1.0) * direction / np.linalg.norm(direction)
        axis = rng.normal(size=3)
        turn = np.zeros(4)
        mujoco.mju_axisAngle2Quat(turn, axis / np.linalg.norm(axis), np.deg2rad(5.0 * level))
        quat = np.zeros(4)
        mujoco.mju_mulQuat(quat, model.cam_quat[cam], turn)
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, turn)
        model.cam_pos[cam] += shift
        model.cam_pos0[cam] += shift  # tracking cameras place themselves from pos0 / mat0
        model.cam_quat[cam] = quat
        model.cam_mat0[cam] = (model.cam_mat0[cam].reshape(3, 3) @ rotation.reshape(3, 3)).ravel()

    return Perturbation(scene=scene, needs_scene=True)


PERTURBATIONS: dict[str, Callable[[np.random.Generator, float], Perturbation]] = {
    "brightness": brightness_contrast,
    "color-jitter": color_jitter,
    "noise": gaussian_noise,
    "occlusion": occlusion,
    "colors": colors,
    "colors-bodies": body_colors,
    "colors-floor": floor_colors,
    "colors-sky": sky_colors,
    "background": moving_background,
    "camera": camera_shift,
}


CHOICES = [*PERTURBATIONS, "video=DIR"]


def parse_perturbation(spec: str, option: str = "--perturb") -> tuple[str, str | None]:
    """(name, argument) of a perturbation spec: a name from PERTURBATIONS takes no argument,
    `video=DIR` is ("video", "DIR"). A ValueError starting with `option` for anything else."""
    name, has_argument, argument = spec.partition("=")
    if name in PERTURBATIONS and not has_argument:
        return name, None
    if name == "video" and argument:
        return name, argument
    raise ValueError(f"{option}: unknown perturbation '{spec}' (choose from {', '.join(CHOICES)})")


def perturbation_name(spec: str) -> str:
    """What names the evaluation under a perturbation spec (eval/NAME.json): `video=DIR` is `video`."""
    return parse_perturbation(spec)[0]


def make_perturbation(spec: str, seed: int, level: float = 1.0) -> Perturbation:
    """A perturbation from its spec: a name from PERTURBATIONS, or `video=DIR`."""
    name, argument = parse_perturbation(spec)
    if not 0.0 < level <= 1.0:
        raise ValueError(f"--perturb-level: {level} is outside (0, 1] (1 is the strongest)")
    rng = np.random.default_rng(seed)
    if name == "video":
        return video_background(Path(argument), rng, level)
    return PERTURBATIONS[name](rng, level)
