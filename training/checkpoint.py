"""The training checkpoint: one typed model that semore-train writes and everything else reads.

The file is a torch-pickled dict of plain values and tensors; `Checkpoint` is its one reader and
writer, so no caller reads it by key. Format 1 is the layout semore-train has always written:
files without a `format_version` key are format 1, so runs checkpointed before the key existed
still resume and export. Any other version is refused with a message naming the file.

Written atomically: a killed run leaves the previous complete checkpoint, never half of one.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training.config import EnvConfig, RunConfig

CHECKPOINT_NAME = "checkpoint.pt"
REPLAY_NAME = "replay.npz"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file this code cannot read; the message names the file and what is wrong."""


def frames_after(step: int, env: EnvConfig) -> int:
    """Environment frames in `step` agent steps: each step repeats its action `action_repeat` times."""
    return step * env.action_repeat


class TrainedEnv(BaseModel):
    """The env a checkpoint was trained in, and its action bounds (the exported graph's output range)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    action_low: list[float]
    action_high: list[float]

    @model_validator(mode="after")
    def _one_bound_per_dimension(self) -> TrainedEnv:
        if len(self.action_low) != len(self.action_high):
            raise ValueError(
                f"action_high has {len(self.action_high)} entries, action_low {len(self.action_low)}"
            )
        return self


class Checkpoint(BaseModel):
    """What semore-train saves: the run's config, the agent, the counters to resume from, the env's bounds."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = Field(FORMAT_VERSION, ge=FORMAT_VERSION, le=FORMAT_VERSION)
    config: RunConfig
    agent: dict[str, Any]  # the agent's state_dict: module states, optimiser states, counters
    step: int = Field(ge=0)  # agent steps; `frames` converts
    episode: int = Field(ge=0)
    elapsed: float = Field(ge=0)  # wall seconds of training, summed over resumed sessions
    eval_seconds: float = Field(0.0, ge=0)  # absent from the earliest format-1 files
    finished: bool
    curve: list[dict[str, int | float]]
    rng: dict[str, Any]  # rng_state()
    teacher_seconds: tuple[float, float] | None = None  # (labelling, waited for); None: no teacher
    replay_size: int = Field(ge=0)
    env: TrainedEnv

    @property
    def frames(self) -> int:
        return frames_after(self.step, self.config.env)

    def save(self, path: Path) -> None:
        # The config goes in as JSON values, as format 1 always stored it: no pydantic type in the pickle.
        save_atomic(
            dict(self) | {"config": self.config.model_dump(mode="json"), "env": self.env.model_dump()}, path
        )

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> Checkpoint:
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        try:
            state = torch.load(path, map_location=device, weights_only=False)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{path}: not a semore-train checkpoint (it holds a {type(state).__name__})"
            )
        version = state.get("format_version", 1)  # format 1 predates the key
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format_version {version!r}, but this semore reads format "
                f"{FORMAT_VERSION} only; use the semore that wrote it"
            )
        try:
            return cls.model_validate(state)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise CheckpointError(f"{path}: not a format-{FORMAT_VERSION} checkpoint: {fields}") from None


def save_atomic(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def rng_state(numpy_rng: np.random.Generator) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": numpy_rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any], numpy_rng: np.random.Generator) -> None:
    random.setstate(state["python"])
    numpy_rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
