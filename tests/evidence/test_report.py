"""semore-report: its statistics against hand-computed cases, and a whole report from a sweep folder."""

import json

import numpy as np
import pytest

from evidence import stats
from evidence.report import main as semore_report


def test_iqm_is_the_mean_of_the_middle_half():
    scores = np.array([9.0, 1.0, 3.0, 100.0, 4.0, 5.0, 6.0, -50.0])  # sorted: -50 1 3 4 5 6 9 100
    assert stats.iqm(scores) == pytest.approx((3 + 4 + 5 + 6) / 4)


def test_the_bootstrap_interval_matches_a_plain_numpy_percentile_bootstrap():
    rng = np.random.default_rng(1)
    task_a, task_b = rng.normal(0.5, 0.1, 10), rng.normal(0.8, 0.05, 10)
    point, low, high = stats.interval([task_a, task_b], stats.mean, reps=4000, seed=0)
    assert point == pytest.approx(np.mean(np.concatenate([task_a, task_b])))
    # Independently: resample runs within each task, take the mean, read the 2.5 / 97.5 percentiles.
    check = np.random.default_rng(123)
    means = [
        np.mean(np.concatenate([check.choice(task_a, 10), check.choice(task_b, 10)])) for _ in range(4000)
    ]
    assert low == pytest.approx(np.percentile(means, 2.5), abs=0.01)
    assert high == pytest.approx(np.percentile(means, 97.5), abs=0.01)
    assert low < point < high


def test_an_interval_on_identical_scores_collapses_to_the_value():
    assert stats.interval([np.full(5, 0.7)], stats.iqm) == (pytest.approx(0.7),) * 3


def test_probability_of_improvement_counts_ties_as_half():
    # pairs of (1, 2, 3) against (2, 2, 0): 1 wins 1, 2 wins 1 + two half ties, 3 wins 3 -> 6 / 9
    assert stats.probability_of_improvement(
        [np.array([1.0, 2, 3])], [np.array([2.0, 2, 0])]
    ) == pytest.approx(6 / 9)
    assert stats.probability_of_improvement([np.ones(3)], [np.ones(3)]) == 0.5


def test_frames_to_threshold_and_a_median_where_runs_never_get_there():
    curve = [{"frames": 10, "return": 500}, {"frames": 20, "return": 810}, {"frames": 30, "return": 700}]
    assert stats.frames_to_threshold(curve, 800) == 20
    assert stats.frames_to_threshold(curve, 900) is None
    assert stats.median_frames([20, 40, None]) == 40
    assert stats.median_frames([20, None, None]) is None


def test_a_report_of_a_finished_sweep(finished_sweep, tmp_path, capsys):
    extra = tmp_path / "evidence.json"
    assert semore_report([str(finished_sweep), "--json", str(extra), "--reps", "500"]) == 0
    report = json.loads((finished_sweep / "report/report.json").read_text())
    assert json.loads(extra.read_text()) == report
    pixel, semore = report["arms"]["pixel"], report["arms"]["semore"]
    assert pixel["seeds"] == semore["seeds"] == 3  # the running trial does not count
    assert semore["iqm"] == pytest.approx(0.8) and semore["ci_low"] <= 0.8 <= semore["ci_high"]
    assert pixel["prob_improvement_over_pixel"] is None
    assert semore["prob_improvement_over_pixel"] == 1.0
    assert semore["retention"]["colors"]["mean"] == pytest.approx(0.9)
    assert pixel["retention"]["colors"]["mean"] == pytest.approx(0.5)
    assert semore["frames_to_threshold"]["median"] == 30000 and semore["frames_to_threshold"]["reached"] == 2
    assert pixel["frames_to_threshold"]["median"] is None
    assert [p["frames"] for p in semore["curve"]] == [10000, 20000, 30000]
    for name in ("report.md", "curves.png", "retention.png"):
        assert (finished_sweep / "report" / name).stat().st_size > 0
    assert "| semore | 3 |" in capsys.readouterr().out


def test_a_folder_without_a_sweep_is_a_clear_error(tmp_path, capsys):
    assert semore_report([str(tmp_path)]) == 2
    assert "no sweep.json" in capsys.readouterr().err
