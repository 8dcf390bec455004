"""Every semore command takes its options from a typed model (semore_runtime.options): the same
spelling rules, defaults from the model alone, and a bad value exits 2 naming its option."""

from __future__ import annotations

from pathlib import Path

import pytest

from evidence.report import ReportOptions
from evidence.sweep import SweepOptions
from export.cli import ExportOptions
from semore_runtime.options import parse_command
from training.cli import TrainOptions
from training.evaluate import EvalOptions


def test_options_fill_their_models():
    train = parse_command(TrainOptions, "t", "", ["--out", "r", "--set", "a=1", "--set", "b=2", "--resume"])
    assert train == TrainOptions(out=Path("r"), overrides=["a=1", "b=2"], resume=True)
    assert parse_command(TrainOptions, "t", "", ["--out", "r"]).overrides == []

    sweep = parse_command(
        SweepOptions, "s", "", ["--spec", "x.yaml", "--out", "o", "--seeds", "1", "3", "--arms", "pixel"]
    )
    assert (sweep.seeds, sweep.arms, sweep.backend, sweep.max_concurrent) == ([1, 3], ["pixel"], "ray", None)

    report = parse_command(ReportOptions, "r", "", ["sweeps-out/x", "--json", "r.json"])
    assert (report.sweep, report.json_path, report.reps) == (Path("sweeps-out/x"), Path("r.json"), 2000)

    evaluation = parse_command(EvalOptions, "e", "", ["--server", "h:1", "--json", "e.json"])
    assert (evaluation.server, evaluation.json_path, evaluation.device) == ("h:1", Path("e.json"), "auto")

    export = parse_command(ExportOptions, "x", "", ["--checkpoint", "c.pt", "--out", "p.onnx", "--fp16"])
    assert export == ExportOptions(checkpoint=Path("c.pt"), out=Path("p.onnx"), fp16=True)


@pytest.mark.parametrize(
    ("model", "argv", "message"),
    [
        (EvalOptions, [], "give exactly one of --model and --server"),
        (EvalOptions, ["--model", "p.onnx", "--server", "h:1"], "give exactly one of --model and --server"),
        (EvalOptions, ["--model", "p.onnx", "--episodes", "0"], "--episodes: Input should be greater than"),
        (
            SweepOptions,
            ["--spec", "x", "--out", "o", "--max-concurrent", "0"],
            "--max-concurrent: Input should",
        ),
        (
            SweepOptions,
            ["--spec", "x", "--out", "o", "--seeds", "one"],
            "--seeds: Input should be a valid integer",
        ),
        (
            SweepOptions,
            ["--spec", "x", "--out", "o", "--backend", "local", "--address", "h:6379"],
            "--address needs the ray backend",
        ),
        (ReportOptions, ["s", "--reps", "0"], "--reps: Input should be greater than"),
    ],
)
def test_a_bad_option_exits_2_naming_it(model, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_command(model, "semore-x", "", argv)
    assert exit_info.value.code == 2
    assert f"semore-x: error: {message}" in capsys.readouterr().err
