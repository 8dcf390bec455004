"""Teachers: train-time sources of knowledge maps (which pixels matter), one interface for all."""

from __future__ import annotations

import torch

from training.config import TeacherConfig
from training.teachers.base import Labels, Observation, Teacher, downsample_mask
from training.teachers.pipeline import LabelPipeline


def make_teacher(config: TeacherConfig, env_id: str, device: torch.device) -> Teacher | None:
    """None for `kind: none`, the ablation in which the knowledge losses are off."""
    if config.kind == "none":
        return None
    if config.kind == "sim":
        from training.teachers.sim import SimTeacher

        return SimTeacher(config)
    if config.kind == "clip":
        from training.teachers.clip import ClipTeacher

        return ClipTeacher(config, device)
    if config.kind == "vlm-clip":
        from training.teachers.vlm_clip import VlmClipTeacher

        return VlmClipTeacher(config, env_id, device)
    raise ValueError(f"teacher.kind: unknown teacher '{config.kind}'")


__all__ = ["LabelPipeline", "Labels", "Observation", "Teacher", "downsample_mask", "make_teacher"]
