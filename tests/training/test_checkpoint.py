"""The typed checkpoint: round trip, format 1 as semore-train always wrote it, clear refusals."""

import numpy as np
import pytest
import torch

from export.cli import main as semore_export
from tests.helpers.training import CARTPOLE, TINY, make_checkpoint
from training import checkpoint
from training.agent import make_agent
from training.checkpoint import FORMAT_VERSION, Checkpoint, CheckpointError
from training.cli import main as semore_train
from training.config import load_config


def format_1_state(config, agent) -> dict:
    """A checkpoint's dict exactly as semore-train wrote it before the file carried a format_version
    (runs still training then resume from such files)."""
    return {
        "config": config.model_dump(mode="json"),
        "agent": agent.state_dict(),
        "step": 30,
        "episode": 1,
        "elapsed": 12.5,
        "eval_seconds": 2.0,
        "finished": False,
        "curve": [{"frames": 240, "seconds": 10.1, "return": 31.25, "std": 0.0}],
        "rng": checkpoint.rng_state(np.random.default_rng(0)),
        "teacher_seconds": (1.5, 0.25),
        "replay_size": 30,
        "env": {"id": config.env.id, "action_low": [-1.0], "action_high": [1.0]},
    }


def test_save_then_load_gives_identical_actions(tmp_path):
    path = tmp_path / "checkpoint.pt"
    config, agent = make_checkpoint(path, "semore")
    assert not (tmp_path / "checkpoint.pt.tmp").exists()

    loaded = Checkpoint.load(path)
    assert loaded.config == config and loaded.format_version == FORMAT_VERSION
    assert loaded.frames == 123 * config.env.action_repeat
    assert (loaded.env.action_low, loaded.env.action_high) == ([-1.0], [1.0])
    torch.manual_seed(1)  # different initial weights
    restored = make_agent(config, 1, torch.device("cpu"))
    restored.load_state_dict(loaded.agent)
    stacks = np.random.default_rng(0).integers(0, 256, (5, 3, 48, 48, 3), dtype=np.uint8)
    for stack in stacks:
        np.testing.assert_array_equal(agent.act(stack, explore=False), restored.act(stack, explore=False))


def test_a_file_without_format_version_reads_as_format_1_and_keeps_its_layout(tmp_path):
    config = load_config(overrides=[*TINY, *CARTPOLE])
    agent = make_agent(config, 1, torch.device("cpu"))
    state = format_1_state(config, agent)
    old = tmp_path / "old.pt"
    torch.save(state, old)

    loaded = Checkpoint.load(old)
    assert loaded.format_version == 1 and loaded.config == config
    assert (loaded.step, loaded.frames, loaded.episode, loaded.finished) == (30, 30 * 8, 1, False)
    assert loaded.curve == state["curve"] and loaded.teacher_seconds == (1.5, 0.25)
    # Written back, it is the same layout with the version added: a semore from before the key reads it.
    loaded.save(tmp_path / "new.pt")
    written = torch.load(tmp_path / "new.pt", weights_only=False)
    assert written.keys() == state.keys() | {"format_version"} and written["format_version"] == 1
    assert written["config"] == state["config"] and written["env"] == state["env"]
    assert written["curve"] == state["curve"] and type(written["curve"][0]["frames"]) is int


def test_another_format_version_is_refused_naming_the_file_and_the_version(tmp_path, capsys):
    config = load_config(overrides=[*TINY, *CARTPOLE])
    run = tmp_path / "run"
    run.mkdir()
    path = run / checkpoint.CHECKPOINT_NAME
    torch.save(
        format_1_state(config, make_agent(config, 1, torch.device("cpu"))) | {"format_version": 2}, path
    )
    with pytest.raises(CheckpointError, match=rf"{path}: checkpoint format_version 2, .* reads format 1"):
        Checkpoint.load(path)

    # Both commands that read it say so in one line, with no traceback.
    assert semore_export(["--checkpoint", str(path), "--out", str(tmp_path / "p.onnx")]) == 1
    assert "semore-export:" in capsys.readouterr().err and not (tmp_path / "p.onnx").exists()
    overrides = [a for o in [*TINY, *CARTPOLE] for a in ("--set", o)]
    assert semore_train(["--out", str(run), "--resume", *overrides]) == 2
    assert "format_version 2" in capsys.readouterr().err


def test_a_file_that_is_not_a_format_1_checkpoint_names_what_is_wrong(tmp_path):
    config = load_config(overrides=[*TINY, *CARTPOLE])
    state = format_1_state(config, make_agent(config, 1, torch.device("cpu")))
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "rng"}, "rng: Field required"),
        "bad_config": (state | {"config": state["config"] | {"agent": {"lr": -1}}}, "config.agent.lr"),
        "bad_bounds": (state | {"env": state["env"] | {"action_high": [1.0, 1.0]}}, "action_high has 2"),
        "not_a_dict": ([1, 2], "not a semore-train checkpoint"),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(CheckpointError, match=message):
            Checkpoint.load(tmp_path / name)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt: not a readable checkpoint"):
        Checkpoint.load(tmp_path / "notes.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        Checkpoint.load(tmp_path / "missing.pt")


def test_rng_state_round_trip():
    rng = np.random.default_rng(5)
    state = checkpoint.rng_state(rng)
    expected = (rng.random(), torch.rand(1).item())
    other = np.random.default_rng(0)
    checkpoint.restore_rng(state, other)
    assert (other.random(), torch.rand(1).item()) == expected
