"""Typed run configuration: YAML files under configs/, overridable from the command line.

Every model forbids unknown fields, so a typo fails before any work and the error names the
field's full path (``agent.lr``), not a line deep in a stack trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvConfig(Strict):
    id: str = Field("dmc:cartpole-balance", description="dmc:<domain>-<task> or gym:<id>")
    image_size: int = Field(84, ge=16, le=512)
    frame_stack: int = Field(3, ge=2, le=8, description="K >= 2: the motion path needs a difference")
    action_repeat: int = Field(2, ge=1)
    camera: int | None = Field(None, description="dm_control camera id; None takes DrQ-v2's per-domain one")
    render_quality: Literal["default", "fast"] = Field(
        "default", description="fast: shadows, multisampling and reflections off (3-5x cheaper renders)"
    )


class TeacherConfig(Strict):
    kind: Literal["sim", "none"] = "sim"
    objects: list[str] = Field(
        default_factory=list,
        description="sim: the task's key objects (dm_control body or geom names; CarRacing: road, car)",
    )
    map_size: int = Field(21, ge=4, le=128, description="knowledge maps are stored at map_size^2, uint8")


class EncoderConfig(Strict):
    kind: Literal["semore", "pixel"] = "semore"
    channels: int = Field(32, ge=4, description="conv width of each path")
    layers: int = Field(4, ge=2, le=8)
    feature_dim: int = Field(50, ge=8, description="per-path latent; the fused feature is 2x this")
    attention_grid: int = Field(6, ge=1, description="feature maps are pooled to grid^2 attention tokens")
    channels_last: bool = True
    compile: bool = False


class LossWeights(Strict):
    transition: float = Field(1.0, ge=0)
    reward: float = Field(1.0, ge=0)
    knowledge_map: float = Field(1.0, ge=0)
    contrastive: float = Field(0.05, ge=0)


class AgentConfig(Strict):
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(256, ge=2)
    hidden_dim: int = Field(1024, ge=8)
    gamma: float = Field(0.99, gt=0, le=1)
    n_step: int = Field(3, ge=1)
    critic_tau: float = Field(0.005, gt=0, le=1)
    encoder_tau: float = Field(0.005, gt=0, le=1)
    actor_update_every: int = Field(2, ge=1)
    target_update_every: int = Field(2, ge=1)
    init_temperature: float = Field(0.1, gt=0)
    augment_pad: int = Field(4, ge=0)
    contrastive_temperature: float = Field(0.1, gt=0)
    loss_weights: LossWeights = Field(default_factory=LossWeights)


class TrainConfig(Strict):
    frames: int = Field(500_000, ge=1, description="environment frames (agent steps x action repeat)")
    seed_frames: int = Field(4000, ge=0)
    updates_per_step: int = Field(1, ge=1)
    update_every_steps: int = Field(1, ge=1)
    eval_every_frames: int = Field(10_000, ge=1)
    eval_episodes: int = Field(10, ge=1)
    checkpoint_every_frames: int = Field(10_000, ge=1)
    replay_capacity: int = Field(1_000_000, ge=100, description="transitions kept")
    save_replay: bool = Field(True, description="store the replay buffer with checkpoints, for exact resume")
    video: bool = True
    stop_at_return: float | None = Field(None, description="stop once an evaluation reaches this return")


class RunConfig(Strict):
    seed: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    env: EnvConfig = Field(default_factory=EnvConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _teacher_needs_objects(self) -> RunConfig:
        if self.teacher.kind == "sim" and not self.teacher.objects:
            raise ValueError("teacher.objects: the sim teacher needs at least one object name")
        return self


class ConfigError(ValueError):
    """A configuration problem; the message names the offending field path."""


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "config"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "invalid config:\n  " + "\n  ".join(lines)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`agent.lr=3e-4` style overrides; values are parsed as YAML (numbers, bools, lists)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.field=value")
        path, raw = item.split("=", 1)
        parsed.append((path.strip(), yaml.safe_load(raw)))
    return parsed


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Reads a YAML config (or the defaults), applies overrides, validates everything at once."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for dotted, value in parse_overrides(overrides or []):
        _set_path(tree, dotted, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
