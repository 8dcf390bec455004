"""The statistics pixel RL now expects (Agarwal et al., 2021), on numpy and scipy alone.

rliable computes these, but its `arch` dependency (7.2.0) fails to import with our pandas 3.1.1
(`deprecate_kwarg() missing 1 required positional argument`), so the same estimators are here:
- IQM: the mean of the middle 50% of run x task scores (scipy.stats.trim_mean at 0.25);
- stratified bootstrap: runs are resampled with replacement within each task, independently
  (scipy.stats.bootstrap resamples each sample it is given on its own), and a 95% percentile
  interval is read off the aggregate of the concatenation;
- probability of improvement P(X > Y): per task, the share of run pairs (x, y) with x > y, ties
  counting one half, averaged over tasks; its interval resamples both arms within each task;
- area under the learning curve: a run's mean evaluation return over a window of frames.

Curves here are lists of {"frames", "return"} points, as `run/summary.json` stores them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

# (point, low, high)
Interval = tuple[float, float, float]
# Reduces the last axis of each task's sample (shape (..., n_task)) to one value per leading index.
Statistic = Callable[[list[np.ndarray]], np.ndarray]
CONFIDENCE = 0.95


def iqm(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: robust to the outlier runs a plain mean follows, more efficient than a median."""
    return stats.trim_mean(scores, 0.25, axis=axis)


def mean(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(scores, axis=axis)


def stratified_bootstrap(
    samples: Sequence[np.ndarray], statistic: Statistic, reps: int, seed: int
) -> Interval:
    """The statistic on the samples and its 95% percentile interval, each sample resampled on its own.

    A sample that is a single run, or whose runs are all equal, resamples only into itself, and
    scipy refuses a sample of one: such samples are held fixed. Where every sample is, the interval
    collapses to the point.
    """
    samples = [np.asarray(s, dtype=float) for s in samples]
    point = float(statistic(samples))
    varying = [i for i, s in enumerate(samples) if len(s) > 1 and np.ptp(s) > 0]
    if not varying:
        return point, point, point

    def resampled(*drawn: np.ndarray, axis: int = -1) -> np.ndarray:
        batch = drawn[0].shape[:-1]
        full = [np.broadcast_to(s, batch + s.shape) for s in samples]
        for i, sample in zip(varying, drawn, strict=True):
            full[i] = sample
        return statistic(full)

    result = stats.bootstrap(
        [samples[i] for i in varying],
        resampled,
        n_resamples=reps,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return point, float(result.confidence_interval.low), float(result.confidence_interval.high)


def pooled_interval(
    per_task: Sequence[np.ndarray], aggregate: Callable[..., np.ndarray], reps: int = 2000, seed: int = 0
) -> Interval:
    """An aggregate (iqm, mean) over all tasks' runs pooled, bootstrapped within each task."""
    return stratified_bootstrap(
        per_task, lambda s: aggregate(np.concatenate(s, axis=-1), axis=-1), reps, seed
    )


def _improvement(x: Sequence[np.ndarray], y: Sequence[np.ndarray]) -> np.ndarray:
    per_task = [
        np.mean(
            (a[..., :, None] > b[..., None, :]) + 0.5 * (a[..., :, None] == b[..., None, :]), axis=(-2, -1)
        )
        for a, b in zip(x, y, strict=True)
    ]
    return np.mean(per_task, axis=0)


def probability_of_improvement(x: Sequence[np.ndarray], y: Sequence[np.ndarray]) -> float:
    """P(X > Y), tasks aligned: x[t] and y[t] are the two arms' run scores on task t."""
    return float(
        _improvement([np.asarray(a, dtype=float) for a in x], [np.asarray(b, dtype=float) for b in y])
    )


def probability_of_improvement_interval(
    x: Sequence[np.ndarray], y: Sequence[np.ndarray], reps: int = 2000, seed: int = 0
) -> Interval:
    """P(X > Y) and its interval, both arms' runs resampled within each task."""
    tasks = len(x)
    return stratified_bootstrap([*x, *y], lambda s: _improvement(s[:tasks], s[tasks:]), reps, seed)


def frames_to_threshold(curve: Sequence[dict], threshold: float) -> int | None:
    """Frames of the first evaluation at or above the threshold; None if none got there."""
    return next((int(p["frames"]) for p in curve if p["return"] >= threshold), None)


def median_frames(values: Sequence[int | None]) -> float | None:
    """Median over runs, a run that never got there (None) counting as never.

    None only when more than half never got there; with exactly half, the median is the frames by
    which that half got there (the lower middle value), not an average with "never".
    """
    ordered = sorted(math.inf if v is None else v for v in values)
    if not ordered:
        return None
    lower, upper = ordered[(len(ordered) - 1) // 2], ordered[len(ordered) // 2]
    if math.isinf(lower):
        return None
    return float(lower if math.isinf(upper) else (lower + upper) / 2)


def curve_on_grid(curve: Sequence[dict], grid: Sequence[int]) -> np.ndarray:
    """A run's returns at each grid frame count: its latest evaluation at or before it (carried
    forward past an early stop), NaN before its first evaluation."""
    frames = np.array([p["frames"] for p in curve])
    returns = np.array([p["return"] for p in curve], dtype=float)
    index = np.searchsorted(frames, grid, side="right") - 1
    return np.where(index >= 0, returns[np.clip(index, 0, None)], np.nan)


def common_frames(curves: Sequence[Sequence[dict]], horizon: Sequence[int]) -> list[int]:
    """The frame counts every run was evaluated at, a run that stopped early counting as evaluated
    at each horizon frame past its last one (its last value carries forward to there)."""
    common: set[int] | None = None
    for curve in curves:
        own = {int(p["frames"]) for p in curve}
        own |= {int(f) for f in horizon if f > max(own, default=math.inf)}
        common = own if common is None else common & own
    return sorted(common or ())


def auc_window(curves: Sequence[Sequence[dict]], horizon: Sequence[int], start: int) -> list[int]:
    """The frame counts from `start` on that every run was evaluated at (`common_frames`, an early
    stop carried to the horizon): the one window the areas of all the runs compared are read over."""
    return [f for f in common_frames(curves, horizon) if f >= start]


def area_under_curve(curve: Sequence[dict], window: Sequence[int]) -> float | None:
    """The area under a run's learning curve: the mean of its returns at the window's frame counts;
    None where the run has no evaluation or the window no frame count.

    Every run compared is read over the same window (`auc_window`): a run that stopped early counts
    its last return at each frame count past its stop (the return its exported policy was stopped
    at) rather than averaging over a shorter window of its own, and a run evaluated more often than
    the others is read only where they all were. A mean over the points rather than a trapezoid, so
    the figure stays in a return's units and each evaluation weighs the same however they are spaced.
    """
    if not curve or not window:
        return None
    return float(np.mean(curve_on_grid(curve, window)))


def iqm_curve(
    per_task: Sequence[Sequence[Sequence[dict]]], horizon: Sequence[int], reps: int = 2000, seed: int = 0
) -> list[dict]:
    """IQM across runs x tasks at each frame count all runs share, with its stratified interval.

    per_task[t] holds the (normalised) curves of the runs on task t; horizon is the frames of the
    sweep's longest curve. A run without a single evaluation has no curve to contribute.
    """
    per_task = [[c for c in curves if c] for curves in per_task]
    per_task = [curves for curves in per_task if curves]
    grid = common_frames([c for curves in per_task for c in curves], horizon)
    on_grid = [np.array([curve_on_grid(c, grid) for c in curves]) for curves in per_task]
    points = []
    for i, frames in enumerate(grid):
        point, low, high = pooled_interval([values[:, i] for values in on_grid], iqm, reps, seed)
        points.append({"frames": frames, "iqm": point, "ci_low": low, "ci_high": high})
    return points


def retention(perturbed: float, clean: float) -> float | None:
    """Perturbed over clean return; None where the clean return is not positive (no ratio to read)."""
    return perturbed / clean if clean > 0 else None
