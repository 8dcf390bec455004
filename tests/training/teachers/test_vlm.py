"""The VLM wrapper: batched answers through the real loading path, and a fast, clear missing-model error."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch

from training.config import VlmConfig
from training.teachers.loading import ModelMissingError, hub_cache_dir
from training.teachers.vlm import VisionLanguageModel

PROMPT = "List the objects that matter in this image, one per line."


@pytest.fixture(scope="module")
def vlm(tiny_vlm: Path) -> VisionLanguageModel:
    config = VlmConfig(model=str(tiny_vlm), image_size=56, generation={"max_new_tokens": 8})
    return VisionLanguageModel(config, torch.device("cpu"))


def _frames() -> list[np.ndarray]:
    """Three clearly different frames, at sizes other than the VLM's, so resizing runs too."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    gradient = np.repeat(np.linspace(0, 255, 96, dtype=np.uint8)[None, :, None], 48, axis=0).repeat(3, axis=2)
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 255
    return [noise, gradient, red]


def test_ask_answers_each_frame_in_one_batch(vlm: VisionLanguageModel) -> None:
    frames = _frames()
    before = vlm.calls
    answers = vlm.ask(frames, PROMPT)
    assert vlm.calls == before + 3
    assert len(answers) == 3 and all(isinstance(answer, str) for answer in answers)
    assert len(set(answers)) > 1, "the frames never reached the model: every answer is the same"
    assert vlm.ask(frames, PROMPT) == answers, "greedy decoding must be deterministic"
    assert [vlm.ask([frame], PROMPT)[0] for frame in frames] == answers, "batching changed an answer"
    assert vlm.calls == before + 9


def test_ask_nothing(vlm: VisionLanguageModel) -> None:
    before = vlm.calls
    assert vlm.ask([], PROMPT) == []
    assert vlm.calls == before


def _assert_missing_fast(config: VlmConfig) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelMissingError) as error:
        VisionLanguageModel(config, torch.device("cpu"))
    assert time.perf_counter() - start < 3.0, "a missing model must fail at once, not retry"
    message = str(error.value)
    assert f"'{config.model}'" in message
    assert hub_cache_dir() in message
    assert f"hf download {config.model}" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


@pytest.mark.parametrize("model", ["semore-test/no-such-vlm", "/nonexistent/semore/vlm"])
def test_missing_model_offline(model: str) -> None:
    # HF_HUB_OFFLINE=1 (tests/conftest.py) wins over a config that allows downloads.
    _assert_missing_fast(VlmConfig(model=model, local_files_only=False))


def test_missing_model_local_files_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hub reads HF_HUB_OFFLINE once, at import: lift it there as well as in the environment.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    _assert_missing_fast(VlmConfig(model="semore-test/no-such-vlm", local_files_only=True))
