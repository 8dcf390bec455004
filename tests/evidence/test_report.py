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


def _write_curve(sweep, arm: str, seed: int, returns: dict[int, float]) -> None:
    """Replaces a trial's learning curve with `returns` (frames -> return)."""
    curve = [{"frames": f, "return": r, "std": 0.0, "seconds": 1.0} for f, r in returns.items()]
    summary = sweep / f"trials/cartpole_balance/{arm}/seed{seed}/run/summary.json"
    summary.write_text(json.dumps({"frames": max(returns), "curve": curve}))


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


def test_the_area_under_the_curve_is_the_mean_return_over_one_window_every_run_shares():
    # Evaluated at 0 (before the window), then 5k, 10k and 20k: unevenly spaced.
    full = [{"frames": f, "return": r} for f, r in [(0, 0.9), (5000, 0.2), (10000, 0.4), (20000, 0.9)]]
    stopped = [{"frames": 0, "return": 0.0}, {"frames": 5000, "return": 0.6}]
    window = stats.auc_window([full, stopped], horizon=[0, 5000, 10000, 20000], start=5000)
    assert window == [5000, 10000, 20000]
    # The mean over the points, not a trapezoid (which would give 0.533), and not the 0-frame one.
    assert stats.area_under_curve(full, window) == pytest.approx((0.2 + 0.4 + 0.9) / 3)
    # The early stop is read over the same window, its last return carried to 20k.
    assert stats.area_under_curve(stopped, window) == pytest.approx(0.6)
    # A run evaluated every 2.5k is read only at the frames the other one was evaluated at too.
    dense = [{"frames": f, "return": f / 20000} for f in range(0, 20001, 2500)]
    window = stats.auc_window([full, dense], horizon=[p["frames"] for p in dense], start=5000)
    assert window == [5000, 10000, 20000]
    assert stats.area_under_curve(dense, window) == pytest.approx((0.25 + 0.5 + 1.0) / 3)
    assert stats.area_under_curve([], window) is None
    assert stats.area_under_curve(full, []) is None


def test_retention_needs_a_positive_clean_return():
    assert stats.retention(450.0, 900.0) == 0.5
    assert stats.retention(10.0, 0.0) is None


def test_a_report_of_a_finished_sweep(finished_sweep, tmp_path, capsys):
    extra = tmp_path / "results" / "evidence.json"
    assert semore_report([str(finished_sweep), "--json", str(extra), "--reps", "500"]) == 0
    report = json.loads((finished_sweep / "report/report.json").read_text())
    assert json.loads(extra.read_text()) == report
    assert set(report) == {"sweep", "baseline", "threshold", "auc_window", "statistics", "tasks", "arms"}
    assert report["auc_window"] == {"from": 10000, "to": 30000, "evaluations": 3}
    assert report["baseline"] == "pixel" and report["tasks"] == ["cartpole_balance"]
    assert "scipy.stats.bootstrap" in report["statistics"] and "rliable" in report["statistics"]
    pixel, semore = report["arms"]["pixel"], report["arms"]["semore"]
    assert pixel["seeds"] == semore["seeds"] == 3  # the running trial does not count
    assert semore["iqm"] == pytest.approx(0.8) and semore["ci_low"] <= 0.8 <= semore["ci_high"]
    assert (
        semore["mean"] == pytest.approx(0.8) and 0.7 <= semore["mean_ci_low"] < semore["mean_ci_high"] <= 0.9
    )
    # Each curve climbs linearly to its final return at 10k, 20k, 30k: its area is 2/3 of the final.
    assert semore["auc_iqm"]["iqm"] == pytest.approx(0.8 * 2 / 3)
    assert 0.7 * 2 / 3 <= semore["auc_iqm"]["ci_low"] < semore["auc_iqm"]["ci_high"] <= 0.9 * 2 / 3
    assert pixel["auc_iqm"]["iqm"] == pytest.approx(0.4 * 2 / 3)
    # Named for no baseline in particular (report["baseline"] names it), and null for the baseline.
    assert not any("over_pixel" in key or key == "prob_improvement_ci" for key in semore)
    assert pixel["prob_improvement"] is None and pixel["auc_prob_improvement"] is None
    # semore's worst seed beats pixel's best on both figures.
    certain = {"probability": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert semore["prob_improvement"] == semore["auc_prob_improvement"] == certain
    assert semore["retention"]["colors"]["mean"] == pytest.approx(0.9)
    assert pixel["retention"]["colors"] == dict.fromkeys(
        ("mean", "ci_low", "ci_high", "iqm", "iqm_ci_low", "iqm_ci_high"), pytest.approx(0.5)
    )
    # Under colors: semore 0.63, 0.72, 0.81 of the range, pixel 0.15, 0.2, 0.25.
    colors = semore["perturbed"]["colors"]
    assert colors["iqm"] == pytest.approx(0.72) and 0.63 <= colors["ci_low"] < colors["ci_high"] <= 0.81
    assert colors["prob_improvement"] == certain
    assert pixel["perturbed"]["colors"]["iqm"] == pytest.approx(0.2)
    assert pixel["perturbed"]["colors"]["prob_improvement"] is None
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
    assert "AUC IQM (10000-30000 frames) [95% CI] | P(> pixel) [95% CI] | AUC P(> pixel) [95% CI]" in table
    assert "| 0.533 [" in table and "| 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] |" in table
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
    assert idle["seeds"] == 0 and idle["iqm"] is None and idle["auc_iqm"]["iqm"] is None
    assert idle["prob_improvement"] is None and idle["auc_prob_improvement"] is None
    assert idle["retention"]["colors"]["mean"] is None and idle["curve"] == []
    # semore seed 2 stopped after 10k at 300: carried to 20k and 30k; seed 1 climbs to 700.
    assert [p["frames"] for p in arms["semore"]["curve"]] == [10000, 20000, 30000]
    assert [p["iqm"] for p in arms["semore"]["curve"]] == pytest.approx(
        [(0.7 / 3 + 0.3) / 2, (1.4 / 3 + 0.3) / 2, 0.5]
    )
    # Its area too is over 10k-30k, not its own 10k: (0.3 + 0.3 + 0.3) / 3 beside seed 1's 1.4 / 3.
    assert arms["semore"]["auc_iqm"]["iqm"] == pytest.approx((0.3 + 1.4 / 3) / 2)
    assert "| pixel+aux | 0 | - |" in (out / "report.md").read_text()


def test_the_area_ranks_how_fast_an_arm_learns_where_the_final_score_ranks_where_it_ends(make_sweep):
    sweep = make_sweep(
        {"pixel": [350.0, 400.0, 500.0], "semore": [700.0, 800.0, 900.0]}, {"pixel": 0.5, "semore": 0.9}
    )
    for seed, final in enumerate([350.0, 400.0, 500.0], start=1):  # there from the first evaluation
        _write_curve(sweep, "pixel", seed, {10000: final, 20000: final, 30000: final})
    for seed, final in enumerate([700.0, 800.0, 900.0], start=1):  # there only at the last
        _write_curve(sweep, "semore", seed, {10000: 0.0, 20000: 0.0, 30000: final})
    assert semore_report([str(sweep), "--reps", "500"]) == 0
    arms = json.loads((sweep / "report/report.json").read_text())["arms"]
    # Areas: semore 0.233, 0.267, 0.3; pixel 0.35, 0.4, 0.5.
    assert arms["semore"]["auc_iqm"]["iqm"] == pytest.approx(0.8 / 3)
    assert arms["pixel"]["auc_iqm"]["iqm"] == pytest.approx((0.35 + 0.4 + 0.5) / 3)
    assert arms["semore"]["prob_improvement"]["probability"] == 1.0
    assert arms["semore"]["auc_prob_improvement"] == {"probability": 0.0, "ci_low": 0.0, "ci_high": 0.0}


def test_a_policy_that_keeps_all_of_little_is_not_ranked_above_one_that_keeps_half_of_much(make_sweep):
    sweep = make_sweep(
        {"pixel": [800.0, 900.0, 1000.0], "semore": [300.0, 350.0, 400.0]}, {"pixel": 0.5, "semore": 1.0}
    )
    assert semore_report([str(sweep), "--reps", "500"]) == 0
    arms = json.loads((sweep / "report/report.json").read_text())["arms"]
    assert arms["semore"]["retention"]["colors"]["mean"] == pytest.approx(1.0)
    assert arms["semore"]["retention"]["colors"]["iqm"] == pytest.approx(1.0)
    assert arms["pixel"]["retention"]["colors"]["mean"] == pytest.approx(0.5)
    # Under colors semore returns 300, 350, 400 and pixel 400, 450, 500: one tie in nine pairs.
    semore = arms["semore"]["perturbed"]["colors"]
    assert semore["iqm"] == pytest.approx(0.35) and arms["pixel"]["perturbed"]["colors"][
        "iqm"
    ] == pytest.approx(0.45)
    assert semore["prob_improvement"]["probability"] == pytest.approx(0.5 / 9)
    table = (sweep / "report/report.md").read_text()
    assert "| arm | colors: IQM [95% CI], P(> pixel) |" in table
    semore_row = next(line for line in table.splitlines() if line.startswith("| semore | 0.350 ["))
    assert semore_row.endswith("], 0.06 |") and "| pixel | 0.450 [" in table


def test_retention_has_an_iqm_beside_its_mean(make_sweep):
    sweep = make_sweep({"pixel": [500.0] * 5}, {"pixel": 1.0})
    for seed, kept in enumerate([0.0, 0.5, 0.6, 0.7, 1.0], start=1):
        colors = sweep / f"trials/cartpole_balance/pixel/seed{seed}/eval/colors.json"
        colors.write_text(json.dumps({"mean_return": 500.0 * kept}))
    assert semore_report([str(sweep), "--reps", "500"]) == 0
    colors = json.loads((sweep / "report/report.json").read_text())["arms"]["pixel"]["retention"]["colors"]
    assert colors["mean"] == pytest.approx(0.56) and colors["iqm"] == pytest.approx(0.6)
    assert colors["iqm_ci_low"] <= 0.6 <= colors["iqm_ci_high"]


def test_arms_of_a_single_run_compare(make_sweep):
    sweep = make_sweep({"pixel": [400.0], "semore": [700.0]}, {"pixel": 0.5, "semore": 0.9})
    assert semore_report([str(sweep), "--reps", "500"]) == 0
    semore = json.loads((sweep / "report/report.json").read_text())["arms"]["semore"]
    assert semore["seeds"] == 1 and semore["iqm"] == semore["ci_low"] == semore["ci_high"] == pytest.approx(
        0.7
    )
    assert semore["auc_iqm"] == {"iqm": pytest.approx(0.7 * 2 / 3)} | {
        k: pytest.approx(0.7 * 2 / 3) for k in ("ci_low", "ci_high")
    }
    certain = {"probability": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert semore["prob_improvement"] == semore["auc_prob_improvement"] == certain


def test_without_a_finished_baseline_run_there_is_no_probability_of_improvement(make_sweep):
    sweep = make_sweep({"semore": [700.0, 900.0]}, {"semore": 0.9}, idle_arms=("pixel",))
    assert semore_report([str(sweep), "--reps", "500"]) == 0
    arms = json.loads((sweep / "report/report.json").read_text())["arms"]
    assert arms["semore"]["prob_improvement"] is None and arms["semore"]["auc_prob_improvement"] is None
    assert arms["semore"]["auc_iqm"]["iqm"] == pytest.approx((0.7 + 0.9) / 3)
    assert arms["pixel"]["seeds"] == 0 and arms["pixel"]["auc_iqm"]["iqm"] is None
    row = next(line for line in (sweep / "report/report.md").read_text().splitlines() if "| semore |" in line)
    assert row.startswith("| semore | 2 | 0.800 [") and "| - | - |" in row


def test_a_video_perturbation_is_read_and_reported_under_its_name(finished_sweep, capsys):
    spec_path = finished_sweep / "sweep.json"
    spec = json.loads(spec_path.read_text())
    spec["eval"]["perturbations"].append("video=benchmarks/data/eval_videos")
    spec_path.write_text(json.dumps(spec))
    for trial in (finished_sweep / "trials").glob("*/*/*/eval"):
        clean = json.loads((trial / "clean.json").read_text())["mean_return"]
        (trial / "video.json").write_text(json.dumps({"mean_return": 0.25 * clean}))
    assert semore_report([str(finished_sweep), "--reps", "100"]) == 0
    arms = json.loads((finished_sweep / "report/report.json").read_text())["arms"]
    assert set(arms["semore"]["retention"]) == {"colors", "video"}
    assert arms["semore"]["retention"]["video"]["mean"] == pytest.approx(0.25)
    assert "| retention: colors | retention: video |" in capsys.readouterr().out


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
