"""semore-report: its statistics against hand-computed cases, and a whole report from a sweep folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from evidence import stats
from evidence.report import main as semore_report
from tests.helpers.training import ROOT


def test_iqm_is_the_mean_of_the_middle_half():
    scores = np.array([9.0, 1.0, 3.0, 100.0, 4.0, 5.0, 6.0, -50.0])  # sorted: -50 1 3 4 5 6 9 100
    assert stats.iqm(scores) == pytest.approx((3 + 4 + 5 + 6) / 4)


@pytest.mark.parametrize(
    ("aggregate", "by_hand"),
    [(stats.mean, np.mean), (stats.iqm, lambda x: np.sort(x)[5:15].mean())],  # 20 runs: drop 5 each side
    ids=["mean", "iqm"],
)
def test_the_bootstrap_interval_matches_a_plain_numpy_percentile_bootstrap(aggregate, by_hand):
    rng = np.random.default_rng(1)
    task_a, task_b = rng.normal(0.5, 0.1, 10), rng.normal(0.8, 0.05, 10)
    point, low, high = stats.pooled_interval([task_a, task_b], aggregate, reps=4000, seed=0)
    assert point == pytest.approx(by_hand(np.concatenate([task_a, task_b])))
    # Independently: resample runs within each task, aggregate the pool, read the 2.5 / 97.5 percentiles.
    check = np.random.default_rng(123)
    draws = [
        by_hand(np.concatenate([check.choice(task_a, 10), check.choice(task_b, 10)])) for _ in range(4000)
    ]
    assert low == pytest.approx(np.percentile(draws, 2.5), abs=0.01)
    assert high == pytest.approx(np.percentile(draws, 97.5), abs=0.01)
    assert low < point < high


def test_the_bootstrap_is_reproducible_with_its_seed():
    samples = [np.array([0.1, 0.4, 0.9, 0.3]), np.array([0.5, 0.7, 0.2])]
    assert stats.pooled_interval(samples, stats.iqm, 500, seed=3) == stats.pooled_interval(
        samples, stats.iqm, 500, seed=3
    )


def test_an_interval_on_identical_scores_collapses_to_the_value():
    assert stats.pooled_interval([np.full(5, 0.7)], stats.iqm) == (pytest.approx(0.7),) * 3


def test_single_runs_are_held_fixed_rather_than_crashing_the_bootstrap():
    assert (
        stats.pooled_interval([np.array([0.3]), np.array([0.6])], stats.mean, 500)
        == (pytest.approx(0.45),) * 3
    )
    # A one-run task next to a resampled one: the interval moves only with the resampled task.
    point, low, high = stats.pooled_interval([np.array([0.5]), np.array([0.0, 1.0])], stats.mean, 500)
    assert point == pytest.approx(0.5)
    assert low == pytest.approx(1 / 6) and high == pytest.approx(5 / 6)  # task two resamples to 0, 0.5 or 1


def test_probability_of_improvement_counts_ties_as_half():
    # (1, 2, 3) against (2, 2, 0): 1 beats 0; 2 beats 0 and ties two 2s; 3 beats all three -> 6 / 9
    x, y = [np.array([1.0, 2, 3])], [np.array([2.0, 2, 0])]
    assert stats.probability_of_improvement(x, y) == pytest.approx(6 / 9)
    assert stats.probability_of_improvement([np.ones(3)], [np.ones(3)]) == 0.5
    # Averaged over tasks, not pooled: task two is a clean win, so (6/9 + 1) / 2.
    both = stats.probability_of_improvement([*x, np.array([5.0, 6])], [*y, np.array([1.0])])
    assert both == pytest.approx((6 / 9 + 1) / 2)
    point, low, high = stats.probability_of_improvement_interval(x, y, reps=500)
    assert point == pytest.approx(6 / 9) and 0 <= low < point < high <= 1
    assert stats.probability_of_improvement_interval([np.ones(3)], [np.ones(2)], reps=500) == (0.5, 0.5, 0.5)


def test_frames_to_threshold_and_a_median_where_runs_never_get_there():
    curve = [{"frames": 10, "return": 500}, {"frames": 20, "return": 810}, {"frames": 30, "return": 700}]
    assert stats.frames_to_threshold(curve, 800) == 20  # the first evaluation there, not the best
    assert stats.frames_to_threshold(curve, 900) is None
    assert stats.median_frames([20, 40, None]) == 40
    assert stats.median_frames([20, None, None]) is None  # more than half never got there
    assert stats.median_frames([20, 40, None, None]) == 40  # exactly half: the frames that half needed
    assert stats.median_frames([10, 20, 30, 40]) == 25
    assert stats.median_frames([]) is None


def test_an_early_stop_carries_its_last_value_to_the_longest_curve():
    full = [{"frames": f, "return": f / 100} for f in (10, 20, 30)]
    stopped = [{"frames": 10, "return": 0.5}]
    offset = [{"frames": f, "return": 1.0} for f in (10, 15, 30)]
    assert stats.common_frames([full, stopped], horizon=[10, 20, 30]) == [10, 20, 30]
    assert stats.common_frames([full, offset], horizon=[10, 20, 30]) == [10, 30]
    curve = stats.iqm_curve([[full, stopped]], horizon=[10, 20, 30], reps=500)
    assert [p["frames"] for p in curve] == [10, 20, 30]
    assert [p["iqm"] for p in curve] == pytest.approx([(0.1 + 0.5) / 2, (0.2 + 0.5) / 2, (0.3 + 0.5) / 2])


def test_retention_needs_a_positive_clean_return():
    assert stats.retention(450.0, 900.0) == 0.5
    assert stats.retention(10.0, 0.0) is None


def test_a_report_of_a_finished_sweep(finished_sweep, tmp_path, capsys):
    extra = tmp_path / "results" / "evidence.json"
    assert semore_report([str(finished_sweep), "--json", str(extra), "--reps", "500"]) == 0
    report = json.loads((finished_sweep / "report/report.json").read_text())
    assert json.loads(extra.read_text()) == report
    assert set(report) == {"sweep", "baseline", "threshold", "statistics", "tasks", "arms"}
    assert report["baseline"] == "pixel" and report["tasks"] == ["cartpole_balance"]
    assert "scipy.stats.bootstrap" in report["statistics"] and "rliable" in report["statistics"]
    pixel, semore = report["arms"]["pixel"], report["arms"]["semore"]
    assert pixel["seeds"] == semore["seeds"] == 3  # the running trial does not count
    assert semore["iqm"] == pytest.approx(0.8) and semore["ci_low"] <= 0.8 <= semore["ci_high"]
    assert (
        semore["mean"] == pytest.approx(0.8) and 0.7 <= semore["mean_ci_low"] < semore["mean_ci_high"] <= 0.9
    )
    assert pixel["prob_improvement_over_pixel"] is None and pixel["prob_improvement_ci"] is None
    assert semore["prob_improvement_over_pixel"] == 1.0 and semore["prob_improvement_ci"] == [1.0, 1.0]
    assert semore["retention"]["colors"]["mean"] == pytest.approx(0.9)
    assert pixel["retention"]["colors"] == {
        "mean": pytest.approx(0.5),
        "ci_low": pytest.approx(0.5),
        "ci_high": pytest.approx(0.5),
    }
    # semore's seeds reach 800 at 30k (800), 30k (900) and never (700): median 30k, 2 of 3.
    assert semore["frames_to_threshold"] == {
        "median": 30000,
        "reached": 2,
        "per_run": {
            "cartpole_balance/seed1": None,
            "cartpole_balance/seed2": 30000,
            "cartpole_balance/seed3": 30000,
        },
    }
    assert pixel["frames_to_threshold"]["median"] is None and pixel["frames_to_threshold"]["reached"] == 0
    assert [p["frames"] for p in semore["curve"]] == [10000, 20000, 30000]
    assert semore["curve"][-1]["iqm"] == pytest.approx(0.8)
    for name in ("report.md", "curves.png", "retention.png"):
        assert (finished_sweep / "report" / name).stat().st_size > 0
    table = capsys.readouterr().out
    assert "| semore | 3 | 0.800 [" in table and "30000 (2/3)" in table
    assert table.startswith((finished_sweep / "report/report.md").read_text())


def test_runs_from_different_commits_in_one_arm_are_named_and_warned_about(finished_sweep, capsys):
    for seed, commit in [(1, "aaaaaaa"), (2, "aaaaaaa"), (3, "bbbbbbb")]:
        path = finished_sweep / f"trials/cartpole_balance/semore/seed{seed}/trial.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"commit": commit}))
    assert semore_report([str(finished_sweep), "--reps", "100"]) == 0
    arms = json.loads((finished_sweep / "report/report.json").read_text())["arms"]
    assert arms["semore"]["commits"] == ["aaaaaaa", "bbbbbbb"] and arms["pixel"]["commits"] == []
    warning = capsys.readouterr().err
    assert "arm 'semore' pools runs trained at commits aaaaaaa, bbbbbbb" in warning and "pixel" not in warning


def test_an_arm_without_finished_runs_and_a_run_that_stopped_early(make_sweep, tmp_path):
    sweep = make_sweep(
        {"pixel": [300.0, 400.0], "semore": [700.0, 900.0]},
        {"pixel": 0.5, "semore": 0.9},
        stopped_early=(("semore", 2),),
        idle_arms=("pixel+aux",),
    )
    out = tmp_path / "elsewhere"
    assert semore_report([str(sweep), "--out", str(out), "--reps", "500"]) == 0
    arms = json.loads((out / "report.json").read_text())["arms"]
    idle = arms["pixel+aux"]
    assert idle["seeds"] == 0 and idle["iqm"] is None and idle["prob_improvement_over_pixel"] is None
    assert idle["retention"]["colors"]["mean"] is None and idle["curve"] == []
    # semore seed 2 stopped after 10k at 300: carried to 20k and 30k; seed 1 climbs to 700.
    assert [p["frames"] for p in arms["semore"]["curve"]] == [10000, 20000, 30000]
    assert [p["iqm"] for p in arms["semore"]["curve"]] == pytest.approx(
        [(0.7 / 3 + 0.3) / 2, (1.4 / 3 + 0.3) / 2, 0.5]
    )
    assert "| pixel+aux | 0 | - |" in (out / "report.md").read_text()


def test_a_folder_without_a_sweep_is_a_clear_error(tmp_path, capsys):
    assert semore_report([str(tmp_path)]) == 2
    assert "no sweep.json" in capsys.readouterr().err
    assert semore_report([str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_it_runs_as_a_module_and_fails_without_a_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "evidence.report", str(tmp_path / "missing")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("semore-report: no such folder") and "Traceback" not in done.stderr
