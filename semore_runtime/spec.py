"""The policy spec: the one description of an exported policy that every consumer reads.

It travels inside the ONNX file's metadata (key ``SPEC_METADATA_KEY``), so a policy file is
self-describing and no side file can drift out of step with the weights.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPEC_METADATA_KEY = "semore.policy_spec"
FORMAT_VERSION = 1
# Training takes frames of at most 512 px and stacks of at most 8 (training/config.py). The caps
# are twice that: they bound what one stream holds (K*H*W*3 bytes, 48 MiB at the caps) and what a
# batch or a warm-up allocates, so a corrupt spec (30000 x 30000, K = 64: 160 GiB a stack) is
# refused before anything is allocated instead of exhausting the server's memory.
MAX_FRAME_SIDE = 1024
MAX_FRAME_STACK = 16


def conflict(field: str, spec_value: object, other: str) -> str:
    """One line naming the field, the spec's value and what it conflicts with.

    Every refused spec says the same three things in the same order, whether the spec breaks
    its own rules (here) or disagrees with its graph (OnnxPolicy).
    """
    return f"{field}: the spec says {spec_value!r}, {other}"


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = Field(FORMAT_VERSION, ge=1, le=FORMAT_VERSION)
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[3] = 3
    frame_stack: int = Field(gt=0)
    action_dim: int = Field(gt=0)
    action_low: list[float]
    action_high: list[float]
    env_id: str
    # How the training env was driven, so semore-eval can reproduce it in simulation.
    action_repeat: int = Field(1, ge=1)
    camera: int | None = None
    render_quality: str = "default"
    encoder_kind: Literal["semore", "pixel"]
    agent_kind: Literal["sac", "drqv2"] = "sac"  # the actor's shape: tanh-Gaussian mean or DrQ-v2 trunk
    # The encoder settings that shape the graph (widths, layers, fusion, motion path, grid).
    encoder_options: dict[str, str | bool | int] = Field(default_factory=dict)
    teacher_kind: str
    training_frames: int = Field(ge=0)
    checkpoint_sha256: str = ""
    input_name: str = "frames"
    output_name: str = "action"

    @model_validator(mode="after")
    def _servable_values(self) -> PolicySpec:
        for field, limit in (
            ("height", MAX_FRAME_SIDE),
            ("width", MAX_FRAME_SIDE),
            ("frame_stack", MAX_FRAME_STACK),
        ):
            value = getattr(self, field)
            if value > limit:
                raise ValueError(
                    conflict(field, value, f"the limit is {limit} (it bounds the memory a stream holds)")
                )
        for field in ("action_low", "action_high"):
            if len(getattr(self, field)) != self.action_dim:
                raise ValueError(
                    conflict(
                        field,
                        getattr(self, field),
                        f"action_dim is {self.action_dim}, so it needs as many entries",
                    )
                )
        # Every served action is clamped to the bounds: NaN bounds would clamp to NaN, and
        # low >= high leaves no valid action.
        for i, (lo, hi) in enumerate(zip(self.action_low, self.action_high, strict=True)):
            for field, value in ((f"action_low[{i}]", lo), (f"action_high[{i}]", hi)):
                if not math.isfinite(value):
                    raise ValueError(conflict(field, value, "a bound must be a finite number"))
            if lo >= hi:
                raise ValueError(
                    conflict(f"action_low[{i}]", lo, f"it must be below action_high[{i}]={hi!r}")
                )
        return self

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def stack_shape(self) -> tuple[int, int, int, int]:
        return (self.frame_stack, self.height, self.width, self.channels)
