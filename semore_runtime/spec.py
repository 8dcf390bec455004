"""The policy spec: the one description of an exported policy that every consumer reads.

It travels inside the ONNX file's metadata (key ``SPEC_METADATA_KEY``), so a policy file is
self-describing and no side file can drift out of step with the weights.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPEC_METADATA_KEY = "semore.policy_spec"
FORMAT_VERSION = 1


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
    encoder_options: dict[str, str | int] = Field(default_factory=dict)
    teacher_kind: str
    training_frames: int = Field(ge=0)
    checkpoint_sha256: str = ""
    input_name: str = "frames"
    output_name: str = "action"

    @model_validator(mode="after")
    def _bounds_match_action_dim(self) -> PolicySpec:
        if len(self.action_low) != self.action_dim or len(self.action_high) != self.action_dim:
            raise ValueError(
                f"action_low and action_high must have action_dim={self.action_dim} entries, "
                f"got {len(self.action_low)} and {len(self.action_high)}"
            )
        if any(lo >= hi for lo, hi in zip(self.action_low, self.action_high, strict=True)):
            raise ValueError("every action_low entry must be below its action_high entry")
        return self

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def stack_shape(self) -> tuple[int, int, int, int]:
        return (self.frame_stack, self.height, self.width, self.channels)
