"""A sweep spec: a base config plus a grid of tasks x arms x seeds, read from sweeps/NAME.yaml.

Every trial's config is validated when the spec loads, so a typo in one arm fails the sweep
before any work, naming the trial and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training.backgrounds import media_files
from training.config import ConfigError, load_config
from training.perturb import CHOICES, parse_perturbation

ROOT = Path(__file__).resolve().parents[1]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalSpec(Strict):
    """How each trial's exported policy is evaluated, clean and under each perturbation."""

    episodes: int = Field(10, ge=1)
    seed: int = Field(0, description="the same for every trial: every arm meets the same perturbed scenes")
    perturbations: list[str] = Field(default_factory=list)
    level: float = Field(1.0, gt=0, le=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _known(self) -> EvalSpec:
        parsed, unknown = [], []
        for spec in self.perturbations:
            try:
                parsed.append(parse_perturbation(spec))
            except ValueError:
                unknown.append(spec)
        if unknown:
            raise ValueError(f"eval.perturbations: unknown {unknown} (choose from {', '.join(CHOICES)})")
        names = [name for name, _ in parsed]
        if shared := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(
                f"eval.perturbations: more than one is named {shared} (each is stored as eval/NAME.json)"
            )
        for name, folder in parsed:
            if name == "video":  # semore-eval runs in the repository root, so the folder is relative to it
                media_files(ROOT / folder, "eval.perturbations")
        return self


class Resources(Strict):
    """What one trial asks the scheduler for; cpus also sets the trial's torch threads."""

    cpus: float = Field(1, gt=0)
    gpus: float = Field(0, ge=0)


class SweepSpec(Strict):
    name: str
    base: str = Field(description="the base run config, relative to the repository root")
    set: list[str] = Field(default_factory=list, description="overrides for every trial")
    tasks: dict[str, list[str]] = Field(min_length=1, description="task name -> overrides (env.id, objects)")
    arms: dict[str, list[str]] = Field(min_length=1, description="arm name -> overrides")
    seeds: list[int] = Field(min_length=1)
    baseline: str = "pixel"
    threshold: float = Field(800.0, description="the return that 'frames to threshold' counts to")
    return_range: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="per task (low, high) for normalised scores; dm_control: 0-1000"
    )
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int = Field(2, ge=1)
    retries: int = Field(1, ge=0, description="a failed trial runs again this many times")
    eval: EvalSpec = Field(default_factory=EvalSpec)

    @model_validator(mode="after")
    def _baseline_is_an_arm(self) -> SweepSpec:
        if self.baseline not in self.arms:
            raise ValueError(f"baseline: '{self.baseline}' is not one of the arms {list(self.arms)}")
        for task in self.tasks:
            self.return_range.setdefault(task, (0.0, 1000.0))
        return self

    def extends(self, earlier: SweepSpec) -> bool:
        """Whether this spec only adds seeds or arms to `earlier`: every trial of `earlier` keeps
        what it measures, so a resumed sweep may grow without running any trial again."""
        grown = {"seeds", "arms"}
        return (
            self.model_dump(exclude=grown) == earlier.model_dump(exclude=grown)
            and set(earlier.seeds) <= set(self.seeds)
            and all(self.arms.get(arm) == overrides for arm, overrides in earlier.arms.items())
        )

    def trials(self, out: Path) -> list[Trial]:
        """Seeds outermost, so a sweep cut short has every arm at the same number of seeds."""
        return [
            Trial(
                task,
                arm,
                seed,
                [*self.set, *task_set, *arm_set, f"seed={seed}"],
                out / "trials" / task / arm / f"seed{seed}",
            )
            for seed in self.seeds
            for task, task_set in self.tasks.items()
            for arm, arm_set in self.arms.items()
        ]


@dataclass(frozen=True)
class Trial:
    task: str
    arm: str
    seed: int
    overrides: list[str]
    folder: Path

    @property
    def key(self) -> str:
        return f"{self.task}/{self.arm}/seed{self.seed}"


class SpecError(ValueError):
    """A sweep spec problem; the message names the field or the trial."""


def load_spec(path: Path) -> SweepSpec:
    if not path.is_file():
        raise SpecError(f"sweep spec not found: {path}")
    try:
        spec = SweepSpec.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise SpecError(f"{path}: {errors}") from None
    if not (ROOT / spec.base).is_file():
        raise SpecError(f"{path}: base: no config at {spec.base}")
    for trial in spec.trials(Path(".")):
        try:
            load_config(ROOT / spec.base, trial.overrides)
        except ConfigError as exc:
            raise SpecError(f"{path}: trial {trial.key}: {exc}") from None
    return spec
