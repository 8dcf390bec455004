"""The VLM + CLIP teacher: query rate, the on-disk cache, and a real training run with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.onnx_export import export_checkpoint
from tests.helpers.training import finish, train
from training.config import TeacherConfig
from training.teachers import Observation, make_teacher

CPU = torch.device("cpu")


def teacher_config(
    tiny_clip: str, tiny_vlm: Path, cache: Path, every: int | str = "episode"
) -> TeacherConfig:
    return TeacherConfig.model_validate(
        {
            "kind": "vlm-clip",
            "map_size": 8,
            "clip": {"model": tiny_clip, "pretrained": None},
            "vlm": {
                "model": str(tiny_vlm),
                "image_size": 56,
                "every": every,
                "cache": str(cache),
                "generation": {"max_new_tokens": 8},
            },
        }
    )


def episodes(lengths: list[int]) -> list[Observation]:
    rng = np.random.default_rng(0)
    return [
        Observation(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), index)
        for length in lengths
        for index in range(length)
    ]


@pytest.mark.parametrize(("every", "calls"), [("episode", 2), (2, 5)])
def test_the_vlm_runs_at_the_configured_rate(tiny_clip, tiny_vlm, tmp_path, every, calls):
    teacher = make_teacher(
        teacher_config(tiny_clip, tiny_vlm, tmp_path / "c.sqlite", every), "dmc:cartpole-balance", CPU
    )
    labels = teacher.label(episodes([5, 3]))  # queries at 0 of each; every 2: 0, 2, 4 and 0, 2
    assert teacher.vlm.calls == calls and len(teacher.answers) == calls
    assert labels.maps.shape == (8, 8, 8) and labels.maps.dtype == np.uint8


def test_a_second_pass_asks_the_vlm_nothing(tiny_clip, tiny_vlm, tmp_path):
    config = teacher_config(tiny_clip, tiny_vlm, tmp_path / "c.sqlite", every=2)
    first = make_teacher(config, "dmc:cartpole-balance", CPU)
    labels = first.label(episodes([6]))
    again = make_teacher(config, "dmc:cartpole-balance", CPU)
    relabelled = again.label(episodes([6]))
    assert first.vlm.calls == 3 and again.vlm.calls == 0 and again.cache_hits == 3
    assert again.answers == first.answers
    np.testing.assert_array_equal(relabelled.maps, labels.maps)


def test_frames_between_queries_reuse_the_latest_phrases(tiny_clip, tiny_vlm, tmp_path):
    teacher = make_teacher(
        teacher_config(tiny_clip, tiny_vlm, tmp_path / "c.sqlite"), "dmc:cartpole-balance", CPU
    )
    observations = episodes([4])
    labels = teacher.label(observations)
    phrases = teacher.answers[0] or ["cart", "pole"]  # the task's fallback when the answer is junk
    frames = np.stack([o.capture for o in observations])
    np.testing.assert_array_equal(labels.maps, teacher.grounder.ground(frames, phrases).maps)


def test_training_with_the_vlm_clip_teacher_on_dm_control(tiny_clip, tiny_vlm, tmp_path, tiny):
    settings = [
        "env.id=dmc:cartpole-balance",
        "teacher.kind=vlm-clip",
        f"teacher.clip.model={tiny_clip}",
        "teacher.clip.pretrained=null",
        "teacher.clip.global_target=true",
        f"teacher.vlm.model={tiny_vlm}",
        "teacher.vlm.image_size=56",
        "teacher.vlm.every=20",
        "teacher.vlm.generation.max_new_tokens=8",
        f"teacher.vlm.cache={tmp_path / 'answers.sqlite'}",
        "teacher.batch_size=8",
    ]
    summaries = []
    for run in ("first", "rerun"):
        log = finish(train(tmp_path / run, *settings))
        assert "checkpoint:" in log and "teacher:" in log
        summaries.append(json.loads((tmp_path / run / "summary.json").read_text()))
    first, rerun = summaries
    assert first["teacher"] == "vlm-clip" and first["curve"]
    assert first["vlm_calls"] == first["vlm_queries"] == 3  # 60 observations, one query per 20
    assert 0 < first["teacher_share"] < 1
    # Same seed, same frames: the rerun's answers all come from the cache.
    assert rerun["vlm_calls"] == 0 and rerun["vlm_cache_hits"] == 3
    # The deployed policy needs no teacher: it exports like any other.
    report = export_checkpoint(tmp_path / "first" / "checkpoint.pt", tmp_path / "policy.onnx")
    assert report.spec.teacher_kind == "vlm-clip" and report.worst <= 1e-4


def test_a_missing_teacher_model_stops_training_with_one_clear_error(tmp_path):
    proc = train(tmp_path / "run", "teacher.kind=clip", "teacher.phrases=[cart, pole]")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "CLIP model 'ViT-B-32 (laion2b_s34b_b79k)' is not available locally" in out
    assert "Traceback" not in out
