"""Typed run configuration: YAML files under configs/, overridable from the command line.

Every model forbids unknown fields, so a typo fails before any work and the error names the
field's full path (``agent.lr``), not a line deep in a stack trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.geometry import conv_output_size


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


class ClipConfig(Strict):
    """open_clip grounding of phrases in pixels (the `clip` and `vlm-clip` teachers)."""

    model: str = Field("ViT-B-32", description="an open_clip architecture name")
    pretrained: str | None = Field(
        "laion2b_s34b_b79k",
        description="an open_clip pretrained tag or a local checkpoint path; null: random weights (tests only)",
    )
    cache_dir: str | None = Field(
        None, description="where open_clip weights live; None: the Hugging Face cache"
    )
    local_files_only: bool = Field(True, description="never download; a missing model is one clear error")
    precision: Literal["auto", "fp32", "fp16"] = Field("auto", description="auto: fp16 on CUDA, fp32 on CPU")
    temperature: float | None = Field(
        None,
        gt=0,
        description="softmax temperature over phrases and background; None: the model's logit scale",
    )
    background: list[str] = Field(
        default_factory=lambda: ["background", "floor", "sky", "wall", "ground"],
        description="prompts that compete with the phrases for each patch",
    )
    global_target: bool = Field(
        False, description="use the CLIP image embedding as the contrastive target of the semantic latent"
    )


class GenerationConfig(Strict):
    max_new_tokens: int = Field(48, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)


class VlmConfig(Strict):
    """The vision-language model that lists the objects that matter (the `vlm-clip` teacher)."""

    model: str = Field("Qwen/Qwen2-VL-2B-Instruct", description="a transformers model id or local path")
    local_files_only: bool = Field(True, description="never download; a missing model is one clear error")
    prompt: str | None = Field(None, description="None: the default prompt for the env's domain")
    every: int | Literal["episode"] = Field(
        "episode", description="query the VLM once per episode, or every N observations (an int)"
    )
    max_phrases: int = Field(6, ge=1)
    cache: str | None = Field(
        "~/.cache/semore/vlm_answers.sqlite",
        description="SQLite cache of answers keyed by frame hash, prompt and model; None: no cache",
    )
    image_size: int = Field(224, ge=28, description="frames are resized to this before the VLM sees them")
    generation: GenerationConfig = Field(default_factory=GenerationConfig)

    @field_validator("every", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        if value == "episode" or (type(value) is int and value >= 1):
            return value
        raise ValueError("must be 'episode' or a positive number of observations")


class TeacherConfig(Strict):
    kind: Literal["sim", "clip", "vlm-clip", "none"] = "sim"
    objects: list[str] = Field(
        default_factory=list,
        description="sim: the task's key objects (dm_control body or geom names; CarRacing: road, car)",
    )
    phrases: list[str] = Field(
        default_factory=list,
        description="clip: the phrases to ground; vlm-clip: the fallback when the VLM names nothing usable",
    )
    map_size: int = Field(21, ge=4, le=128, description="knowledge maps are stored at map_size^2, uint8")
    batch_size: int = Field(32, ge=1, description="observations labelled per teacher call")
    worker: Literal["auto", "thread", "inline"] = Field(
        "auto", description="thread: label in a background thread; auto: thread on CUDA, inline on CPU"
    )
    clip: ClipConfig = Field(default_factory=ClipConfig)
    vlm: VlmConfig = Field(default_factory=VlmConfig)


# Marks an encoder setting that changes how the encoder trains or runs in torch, not the graph it
# exports: the policy spec leaves it out, and every other field is in it without being listed.
TRAIN_ONLY = {"train_only": True}


class EncoderConfig(Strict):
    kind: Literal["semore", "pixel"] = Field("semore", json_schema_extra=TRAIN_ONLY)
    channels: int = Field(32, ge=4, description="conv width of each path")
    layers: int = Field(4, ge=2, le=8)
    feature_dim: int = Field(50, ge=8, description="per-path latent; the fused feature is 2x this")
    attention_grid: int = Field(
        6, ge=1, description="each path's map is tiled exactly by grid x grid attention tokens"
    )
    knowledge_gate: Literal["predicted", "detached"] = Field(
        "predicted",
        json_schema_extra=TRAIN_ONLY,
        description="detached: only the knowledge-map loss trains the knowledge head, so its map is "
        "the distilled teacher; predicted: the critic and the contrastive loss train it too",
    )
    semantic_input: Literal["newest", "stack"] = Field(
        "newest",
        description="newest: the semantic path reads the newest frame (the paper); stack: all K "
        "frames, as the pixel encoder does, so it sees velocity too",
    )
    knowledge_attention: bool = Field(
        True,
        description="false: each path's latent reads its own map only, with no knowledge tokens "
        "attending to it (an ablation: the knowledge head then only serves the auxiliary losses)",
    )
    motion_path: Literal["light", "full"] = Field(
        "light",
        description="light: half the channels and one more stride-2 layer (SlowFast's fast pathway); "
        "full: the semantic path's width and resolution",
    )
    fusion: Literal["concat", "bilinear", "affine-bilinear"] = Field(
        "concat",
        description="concat: the latents side by side; bilinear: every output a product of the two "
        "(the paper's fusion, which learned slower here: docs/results.md, learner check); affine-bilinear: a "
        "constant 1 appended to both latents, so the fused feature also holds each path's linear terms",
    )
    fusion_norm: Literal["joint", "per-path"] = Field(
        "joint",
        description="concat: joint: one LayerNorm over both latents before the tanh; per-path: each "
        "latent squashed on its own (the semantic one is LayerNormed already), so the motion "
        "latent's magnitude, which it keeps, cannot shrink the semantic latent",
    )
    gate: bool = Field(
        False,
        description="semore: the knowledge head's foreground map (the complement of what the teacher "
        "calls background) multiplies the semantic features before the last conv, and a dilated copy "
        "the frame differences, so background pixels, still or moving, reach neither latent",
    )
    gate_at: Literal["features", "input"] = Field(
        "features",
        description="with gate: features, as above; input: a small masker predicts the foreground of "
        "every frame at pixel resolution and multiplies the frames before both paths, so no conv "
        "sees background and a thin body keeps no background in its receptive field",
    )
    channels_last: bool = Field(True, json_schema_extra=TRAIN_ONLY)
    compile: bool = Field(False, json_schema_extra=TRAIN_ONLY)

    @property
    def dual_path(self) -> bool:
        """Semore's encoder: semantic and motion paths, a knowledge head, and the gate if asked."""
        return self.kind == "semore"

    def graph_options(self) -> dict[str, Any]:
        """The settings that shape the exported graph: every field not marked TRAIN_ONLY."""
        marked = {name for name, f in type(self).model_fields.items() if f.json_schema_extra == TRAIN_ONLY}
        return self.model_dump(exclude=marked)


class LossWeights(Strict):
    transition: float = Field(1.0, ge=0)
    reward: float = Field(1.0, ge=0)
    knowledge_map: float = Field(1.0, ge=0)
    foreground: float = Field(1.0, ge=0, description="the gate's head against the teacher's foreground")
    contrastive: float = Field(0.05, ge=0)
    consistency: float = Field(
        1.0, ge=0, description="augment.composite_loss=consistency: composited features to their clean ones"
    )


class AugmentConfig(Strict):
    """Teacher-guided compositing: views whose background the teacher's foreground mask lets a
    texture replace are added to each batch; every target stays clean. Either the critic learns
    from them too (SVEA's form), or only the encoder does, through a consistency loss."""

    composite: float = Field(
        0.0,
        ge=0,
        le=1,
        description="composited views added to each critic batch, as a fraction of its size (0: off)",
    )
    composite_loss: Literal["critic", "consistency"] = Field(
        "critic",
        description="critic: the TD loss reads the composited views beside the clean ones (SVEA); "
        "consistency: the critic reads clean views only, and each composited view's feature is "
        "pulled to its clean view's, held fixed",
    )
    composite_weight: float = Field(
        1.0,
        ge=0,
        description="composite_loss=critic: each composited view's share of the TD loss against a "
        "clean view's (1: every row alike, as SVEA's batch; below 1, the clean rows lead the critic)",
    )
    composite_from_frames: int = Field(
        0,
        ge=0,
        description="environment frames before composited views join the batch: the critic first "
        "learns the task from clean views alone",
    )
    backgrounds: str = Field(
        "procedural",
        description="procedural: the generated training families (training/backgrounds.py); or a "
        "folder of the user's own images or videos",
    )
    textures: int = Field(64, ge=1, description="textures kept on the device to draw from")
    texture_speed: int = Field(2, ge=0, description="most pixels a texture moves between stacked frames")


class AgentConfig(Strict):
    kind: Literal["sac", "drqv2"] = Field(
        "sac",
        description="sac: SAC-AE style (tanh-Gaussian actor, learned temperature, EMA target encoder); "
        "drqv2: DDPG with scheduled exploration noise, the actor's own trunk, no target encoder",
    )
    auxiliary: bool | None = Field(
        None,
        description="the transition and reward losses; None: on for the semore encoder, off for pixel",
    )
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(256, ge=2)
    hidden_dim: int = Field(1024, ge=8)
    gamma: float = Field(0.99, gt=0, le=1)
    n_step: int = Field(3, ge=1)
    critic_tau: float = Field(0.005, gt=0, le=1)
    encoder_tau: float = Field(0.005, gt=0, le=1)
    actor_update_every: int = Field(2, ge=1)
    target_update_every: int = Field(2, ge=1)
    init_temperature: float = Field(0.1, gt=0, description="sac: the entropy temperature's start")
    noise_std: tuple[float, float] = Field(
        (1.0, 0.1), description="drqv2: exploration std, from the first value down to the second"
    )
    noise_frames: int = Field(
        200_000,
        ge=1,
        description="drqv2: frames over which the std falls linearly (DrQ-v2: 100k agent steps "
        "at action repeat 2)",
    )
    noise_clip: float = Field(0.3, gt=0, description="drqv2: clip of the target and actor-update noise")
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
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @property
    def uses_foreground(self) -> bool:
        """The replay keeps the teacher's per-frame foreground mask: the gate or compositing reads it."""
        return (self.encoder.dual_path and self.encoder.gate) or self.augment.composite > 0

    @property
    def uses_teacher(self) -> bool:
        """A teacher runs only when something consumes it: a knowledge loss, the gate, compositing."""
        if self.teacher.kind == "none":
            return False
        return self.encoder.dual_path or self.uses_foreground

    @model_validator(mode="after")
    def _grid_tiles_both_paths(self) -> RunConfig:
        enc, size = self.encoder, self.env.image_size
        motion_side = conv_output_size(size, enc.layers, strided=2 if enc.motion_path == "light" else 1)
        if motion_side < 1:
            raise ValueError(f"encoder.layers: {enc.layers} conv layers leave nothing of a {size} px image")
        if enc.dual_path and enc.attention_grid > motion_side:
            raise ValueError(
                f"encoder.attention_grid: {enc.attention_grid} is larger than the motion path's "
                f"{motion_side} x {motion_side} map at {size} px and {enc.layers} layers, so some "
                f"tokens would hold no pixel; use at most {motion_side}"
            )
        return self

    @model_validator(mode="after")
    def _per_path_norm_needs_concat(self) -> RunConfig:
        if self.encoder.fusion_norm == "per-path" and self.encoder.fusion != "concat":
            raise ValueError(
                f"encoder.fusion_norm: per-path keeps each latent's dimensions apart, but "
                f"encoder.fusion={self.encoder.fusion} mixes them; use fusion=concat or fusion_norm=joint"
            )
        return self

    @model_validator(mode="after")
    def _mask_users_need_a_teacher(self) -> RunConfig:
        if self.encoder.gate and not self.encoder.dual_path:
            raise ValueError("encoder.gate: only the semore encoder has a gate; set encoder.gate=false")
        if self.encoder.gate_at == "input" and not self.encoder.gate:
            raise ValueError("encoder.gate_at: places the gate, but encoder.gate is false")
        for field, on in (("encoder.gate", self.encoder.gate), ("augment.composite", self.augment.composite)):
            if on and self.teacher.kind == "none":
                raise ValueError(f"{field}: needs the teacher's foreground mask, but teacher.kind is none")
        return self

    @model_validator(mode="after")
    def _teacher_needs_objects(self) -> RunConfig:
        if self.teacher.kind == "sim" and not self.teacher.objects:
            raise ValueError("teacher.objects: the sim teacher needs at least one object name")
        if self.teacher.kind == "clip" and not self.teacher.phrases:
            raise ValueError("teacher.phrases: the clip teacher needs at least one phrase to ground")
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
