"""The statistics pixel RL now expects (Agarwal et al., 2021), on numpy and scipy alone.

rliable computes these, but its `arch` dependency (7.2.0) fails to import with our pandas 3.1.1
(`deprecate_kwarg() missing 1 required positional argument`), so the same estimators are here:
- IQM: the mean of the middle 50% of run x task scores (scipy.stats.trim_mean at 0.25);
- stratified bootstrap: runs are resampled with replacement within each task, independently
  (scipy.stats.bootstrap resamples each sample it is given on its own), and a 95% percentile
  interval is read off the aggregate of the concatenation;
- probability of improvement P(X > Y): per task, the share of run pairs (x, y) with x > y, ties
  counting one half, averaged over tasks; its interval resamples both arms within each task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

Aggregate = Callable[[np.ndarray], float]
CONFIDENCE = 0.95


def iqm(scores: np.ndarray) -> float:
    return float(stats.trim_mean(np.asarray(scores, dtype=float).ravel(), 0.25))


def mean(scores: np.ndarray) -> float:
    return float(np.mean(scores))


def interval(
    per_task: Sequence[np.ndarray], aggregate: Aggregate, reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(point, low, high): the aggregate over all tasks' runs and its stratified-bootstrap 95% CI.

    A task with a single run cannot be resampled into anything new; where no task has two runs
    the interval is the point itself.
    """
    samples = [np.asarray(s, dtype=float) for s in per_task]
    point = aggregate(np.concatenate(samples))
    if all(len(s) < 2 for s in samples) or np.ptp(np.concatenate(samples)) == 0:
        return point, point, point
    result = stats.bootstrap(
        samples,
        lambda *resampled: aggregate(np.concatenate(resampled)),
        n_resamples=reps,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    return point, float(result.confidence_interval.low), float(result.confidence_interval.high)


def probability_of_improvement(x: Sequence[np.ndarray], y: Sequence[np.ndarray]) -> float:
    """P(X > Y), tasks aligned: x[t] and y[t] are the two arms' run scores on task t."""

    def one_task(a: np.ndarray, b: np.ndarray) -> float:
        a, b = np.asarray(a, dtype=float)[:, None], np.asarray(b, dtype=float)[None, :]
        return float(np.mean((a > b) + 0.5 * (a == b)))

    return float(np.mean([one_task(a, b) for a, b in zip(x, y, strict=True)]))


def probability_of_improvement_interval(
    x: Sequence[np.ndarray], y: Sequence[np.ndarray], reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(point, low, high), both arms' runs resampled within each task."""
    point = probability_of_improvement(x, y)
    samples = [np.asarray(s, dtype=float) for s in (*x, *y)]
    if all(len(s) < 2 for s in samples):
        return point, point, point
    tasks = len(x)
    result = stats.bootstrap(
        samples,
        lambda *s: probability_of_improvement(s[:tasks], s[tasks:]),
        n_resamples=reps,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return point, float(np.nan_to_num(low, nan=point)), float(np.nan_to_num(high, nan=point))


def frames_to_threshold(curve: Sequence[dict], threshold: float) -> int | None:
    """Frames of the first evaluation at or above the threshold; None if none got there."""
    return next((int(p["frames"]) for p in curve if p["return"] >= threshold), None)


def median_frames(values: Sequence[int | None]) -> float | None:
    """Median over runs, a run that never got there counting as never (None past half)."""
    if not values:
        return None
    median = float(np.median([math.inf if v is None else v for v in values]))
    return None if math.isinf(median) else median


def curve_on_grid(curve: Sequence[dict], grid: Sequence[int]) -> np.ndarray:
    """A run's returns at each grid frame count: its latest evaluation at or before it (carried
    forward past an early stop), NaN before its first evaluation."""
    frames = np.array([p["frames"] for p in curve])
    returns = np.array([p["return"] for p in curve], dtype=float)
    index = np.searchsorted(frames, grid, side="right") - 1
    return np.where(index >= 0, returns[np.clip(index, 0, None)], np.nan)
