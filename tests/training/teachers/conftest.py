"""Tiny random teacher models on disk (open_clip and Qwen2-VL), so the real loading paths run with no model hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit.random_models import save_random_clip, save_random_qwen2_vl


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a randomly initialised ~180k-parameter Qwen2-VL and its processor."""
    return save_random_qwen2_vl(tmp_path_factory.mktemp("tiny-qwen2-vl"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The `teacher.clip.model` value of a tiny random open_clip model."""
    return save_random_clip(tmp_path_factory.mktemp("tiny-clip"))
