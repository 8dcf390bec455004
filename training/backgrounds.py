"""Background textures for compositing over the sky and floor while training (SVEA-style).

Two sources: the generated training families, or a folder of the user's own images and videos
(Places365, DAVIS, as SODA and SVEA use). The generated families are smooth colour blobs, random
shapes over a base colour and shaded Voronoi mosaics. They are kept apart from every family the
evaluation uses, so that no training choice is tuned on the evaluation: `training/perturb.py`'s
`background` draws drifting sums of sinusoidal plane waves and `colors` paints bodies, floor and
sky in flat random colours, and benchmarks/data/eval_videos holds random-walk particles over a
turning gradient; no training family is a grating, a flat colour or a field of small particles.

Textures come at any square size, usually larger than the frame: the trainer crops a moving window
from each. The generated ones need numpy only; imageio and Pillow are imported only to read files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".gif")


def _smooth_upsampling(low: int, size: int) -> np.ndarray:
    """[size, low]: smoothstep interpolation from `low` grid points spread over `size` pixels."""
    position = np.linspace(0, low - 1, size)
    left = np.minimum(position.astype(int), low - 2)
    t = position - left
    t = t * t * (3 - 2 * t)
    matrix = np.zeros((size, low), np.float32)
    rows = np.arange(size)
    matrix[rows, left] = 1 - t
    matrix[rows, left + 1] = t
    return matrix


def _noise(rng: np.random.Generator, fields: int, low: int, size: int) -> np.ndarray:
    """[fields, size, size] random values on a low x low grid, upsampled smoothly."""
    up = _smooth_upsampling(low, size)
    return up @ rng.normal(size=(fields, low, low)).astype(np.float32) @ up.T


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size].astype(np.float32) / size


def blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth coloured blobs: a soft argmax over a few smooth noise fields picks from a palette."""
    colours = int(rng.integers(3, 7))
    fields = _noise(rng, colours, int(rng.integers(3, 7)), size)
    fields += 0.35 * _noise(rng, colours, int(rng.integers(8, 14)), size)
    weights = np.exp(rng.uniform(3, 10) * (fields - fields.max(0)))
    weights /= weights.sum(0)
    return np.einsum("nhw,nc->hwc", weights, rng.uniform(0, 255, (colours, 3)))


def shapes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Rectangles, ellipses and thick lines of random colours, turned at random, over a base colour."""
    yy, xx = _grid(size)
    image = np.broadcast_to(rng.uniform(0, 255, 3), (size, size, 3)).copy()
    for _ in range(int(rng.integers(6, 16))):
        (cy, cx), angle = rng.uniform(0, 1, 2), rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = (yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)
        a, b = rng.uniform(0.05, 0.3, 2)
        kind = rng.integers(3)
        if kind == 0:
            mask = (np.abs(u) < a) & (np.abs(v) < b)
        elif kind == 1:
            mask = (u / a) ** 2 + (v / b) ** 2 < 1
        else:
            mask = (np.abs(u) < 2 * a) & (np.abs(v) < rng.uniform(0.01, 0.04))
        image[mask] = rng.uniform(0, 255, 3)
    return image


def mosaic(rng: np.random.Generator, size: int) -> np.ndarray:
    """Voronoi cells of random colours, each darkening away from its centre."""
    yy, xx = _grid(size)
    cells = int(rng.integers(6, 30))
    centres = rng.uniform(0, 1, (cells, 2)).astype(np.float32)
    distance = np.sqrt((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2)
    nearest = distance.argmin(-1)
    shade = 1 - rng.uniform(0.5, 2.0) * np.take_along_axis(distance, nearest[..., None], -1)
    return rng.uniform(0, 255, (cells, 3))[nearest] * np.clip(shade, 0.2, 1)


FAMILIES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "blobs": blobs,
    "shapes": shapes,
    "mosaic": mosaic,
}


def procedural_backgrounds(count: int, size: int, seed: int) -> np.ndarray:
    """[count, size, size, 3] uint8 textures of the training families, equally many of each (up to
    one), in an order shuffled by the seed."""
    rng = np.random.default_rng(seed)
    makers = list(FAMILIES.values())
    order = rng.permutation(np.arange(count) % len(makers))
    textures = np.empty((count, size, size, 3), np.uint8)
    for i, family in enumerate(order):
        textures[i] = np.clip(makers[family](rng, size), 0, 255)
    return textures


def media_files(folder: Path, option: str) -> list[Path]:
    """The images and videos under `folder`, subfolders included, sorted; a ValueError starting with
    `option` (the setting that named the folder) when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{option}: no folder at {folder}")
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    if not files:
        raise ValueError(f"{option}: {folder} holds no image or video ({', '.join(s[1:] for s in suffixes)})")
    return files


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def square(image: np.ndarray, size: int) -> np.ndarray:
    """An image of any shape and channel count as RGB [size, size, 3] uint8: centre crop, resize."""
    from PIL import Image, ImageOps

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    pil = Image.fromarray(image).convert("RGB")
    return np.asarray(ImageOps.fit(pil, (size, size), Image.Resampling.BILINEAR))


def read_media(path: Path, size: int, frames: int | None = None) -> np.ndarray:
    """[n, size, size, 3] uint8 from one file: an image is one frame; a video gives all its frames
    in order (for playback), or `frames` of them spread evenly across it (for stills)."""
    import imageio.v3 as iio

    if not is_video(path):
        return square(iio.imread(path), size)[None]
    clip = np.stack([square(frame, size) for frame in iio.imiter(path)])
    if frames is None or frames >= len(clip):
        return clip
    return clip[np.linspace(0, len(clip) - 1, frames).round().astype(int)]


def load_backgrounds(folder: Path, size: int, count: int, seed: int) -> np.ndarray:
    """[n <= count, size, size, 3] uint8 from a folder of images and videos: the seed picks up to
    `count` files; each image gives one texture, the videos share the rest as frames spread across
    each (fewer where a video is shorter). A file that does not decode is skipped."""
    files = media_files(folder, "augment.backgrounds")
    rng = np.random.default_rng(seed)
    chosen = [files[i] for i in rng.permutation(len(files))[:count]]
    videos = sum(map(is_video, chosen))
    rest = count - len(chosen) + videos  # at least one frame per video
    shares = iter([rest // videos + (i < rest % videos) for i in range(videos)])
    textures: list[np.ndarray] = []
    for path in chosen:
        try:
            textures.extend(read_media(path, size, next(shares) if is_video(path) else None))
        except (OSError, ValueError, RuntimeError):  # a broken or unsupported file among many
            continue
    if not textures:
        raise ValueError(f"augment.backgrounds: {folder} holds no readable image or video")
    return np.stack(textures)


def training_backgrounds(source: str, size: int, count: int, seed: int) -> np.ndarray:
    """`augment.backgrounds`: "procedural" for the generated families, else a folder of images and videos."""
    if source == "procedural":
        return procedural_backgrounds(count, size, seed)
    return load_backgrounds(Path(source), size, count, seed)
