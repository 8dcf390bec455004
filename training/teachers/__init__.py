"""Teachers: train-time sources of knowledge maps (which pixels matter), one interface for all."""

from __future__ import annotations

from training.config import TeacherConfig
from training.teachers.base import Teacher, downsample_mask


def make_teacher(config: TeacherConfig) -> Teacher | None:
    """None for `kind: none`, the ablation in which the knowledge losses are off."""
    if config.kind == "none":
        return None
    if config.kind == "sim":
        from training.teachers.sim import SimTeacher

        return SimTeacher(config)
    raise ValueError(f"teacher.kind: unknown teacher '{config.kind}'")


__all__ = ["Teacher", "downsample_mask", "make_teacher"]
