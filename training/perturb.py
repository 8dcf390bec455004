"""Visual perturbations for robustness checks: each maps a uint8 stack to a uint8 stack of the same shape.

Parameters are drawn once per evaluation from the seed (a camera whose lighting changed stays
changed); sensor noise is drawn afresh for every call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Perturbation = Callable[[np.ndarray], np.ndarray]


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255).astype(np.uint8)


def brightness_contrast(rng: np.random.Generator, shift: float = 40.0, contrast: float = 0.6) -> Perturbation:
    sign = rng.choice([-1.0, 1.0])

    def apply(stack: np.ndarray) -> np.ndarray:
        x = stack.astype(np.float32)
        mean = x.mean(axis=(-3, -2, -1), keepdims=True)
        return _clip((x - mean) * contrast + mean + sign * shift)

    return apply


def color_jitter(rng: np.random.Generator, strength: float = 0.3) -> Perturbation:
    gains = rng.uniform(1 - strength, 1 + strength, 3).astype(np.float32)

    def apply(stack: np.ndarray) -> np.ndarray:
        return _clip(stack.astype(np.float32) * gains)

    return apply


def gaussian_noise(rng: np.random.Generator, sigma: float = 20.0) -> Perturbation:
    def apply(stack: np.ndarray) -> np.ndarray:
        return _clip(stack.astype(np.float32) + rng.normal(0.0, sigma, stack.shape))

    return apply


def occlusion(rng: np.random.Generator, fraction: float = 0.25) -> Perturbation:
    state: dict[str, tuple[int, int, int]] = {}

    def apply(stack: np.ndarray) -> np.ndarray:
        h, w = stack.shape[-3:-1]
        if "patch" not in state:
            side = max(1, int(round(fraction * min(h, w))))
            state["patch"] = (side, int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)))
        side, top, left = state["patch"]
        out = stack.copy()
        out[..., top : top + side, left : left + side, :] = 127
        return out

    return apply


PERTURBATIONS: dict[str, Callable[[np.random.Generator], Perturbation]] = {
    "brightness": brightness_contrast,
    "color-jitter": color_jitter,
    "noise": gaussian_noise,
    "occlusion": occlusion,
}


def make_perturbation(name: str, seed: int) -> Perturbation:
    if name not in PERTURBATIONS:
        raise ValueError(f"--perturb: unknown perturbation '{name}' (choose from {', '.join(PERTURBATIONS)})")
    return PERTURBATIONS[name](np.random.default_rng(seed))
