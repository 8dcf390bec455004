"""Everything semore-fleet can be told, one typed field per setting; fleet.cli makes the options.

Each field's description is its option's help and its default the option's default: the CLI
leaves unset options out and lets the model fill them, so no default is written twice.
``ReplicaConfig`` is what a replica reads; it travels (pickled by Ray) into every replica as
its constructor argument. The rest of ``UpConfig`` (replica count, call limit, surge, cluster
address, port) is for Serve and the command, and stays out of the replicas.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from semore_runtime.options import CommandOptions

# A version is a Serve application name, and its route prefix: keep it to a URL-safe word.
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class ReplicaConfig(CommandOptions):
    """The settings a replica of one policy version runs with."""

    model: Path = Field(
        description="exported policy .onnx file; on a cluster, the same file at this path on every node"
    )
    version: str = Field(
        "default",
        pattern=VERSION_PATTERN,
        description="policy version name: clients pick it with the `application` gRPC metadata; "
        "deploying a new file under a running version upgrades it replica by replica",
    )
    num_cpus: float = Field(
        1.0, ge=0, description="CPUs each replica reserves; also its ONNX Runtime thread count"
    )
    num_gpus: float = Field(
        0.0, ge=0, description="GPUs each replica reserves (0.5 shares a GPU); > 0 runs the policy on CUDA"
    )
    max_batch: int = Field(32, ge=1, description="most requests per model call in a replica")
    # Named and counted as semore-serve's --batch-wait-us, so a setting moves between the two as is.
    batch_wait_us: int = Field(
        0,
        ge=0,
        description="longest wait in microseconds for more requests to join a batch; 0 batches only "
        "what queued while the model ran, so a lone robot never waits",
    )
    resize: bool = Field(False, description="resize frames of another size instead of rejecting them")
    token_file: Path | None = Field(
        None,
        description="accepted bearer tokens, one per line: auth on (read by each replica, so on a "
        "cluster the same file at this path on every node)",
    )

    @field_validator("model", "token_file")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # Replicas run in other processes, other folders, other machines: a relative path means nothing there.
        return path.expanduser().absolute() if path is not None else None

    @property
    def device(self) -> str:
        """The OnnxPolicy device: the GPU share decides, so a replica never asks for a GPU Ray did not give it."""
        return "cuda" if self.num_gpus > 0 else "cpu"

    @property
    def threads(self) -> int:
        return max(1, int(self.num_cpus))


class UpConfig(ReplicaConfig):
    """Deploy (or upgrade) one policy version."""

    replicas: int | None = Field(None, ge=1, description="fixed number of replicas (default 1)")
    autoscale: tuple[int, int] | None = Field(
        None,
        description="MIN:MAX replicas, scaled by Ray Serve on open calls per replica",
        json_schema_extra={"metavar": "MIN:MAX"},
    )
    max_ongoing_requests: int = Field(
        256,
        ge=1,
        description="calls one replica holds at once (an open StreamAct counts as one); "
        "more wait in Serve's queue",
    )
    max_surge_percent: int = Field(
        100,
        ge=0,
        le=100,
        description="extra replicas (percent of the count) an upgrade starts next to the old ones, "
        "which serve until their replacements do; 0 stops old replicas first (no spare CPUs/GPUs "
        "needed, but calls wait and open streams fail meanwhile)",
    )
    address: str | None = Field(
        None,
        description="Ray cluster to deploy onto (HEAD:6379, or auto: the one on this machine); without it, "
        "Ray starts on this machine and the command stays in the foreground until Ctrl-C",
    )
    grpc_port: int = Field(
        9000,
        ge=1,
        le=65535,
        description="port of Ray Serve's gRPC proxy on every node (fixed when Serve first starts)",
    )

    @field_validator("autoscale", mode="before")
    @classmethod
    def _parse_range(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        low, sep, high = value.partition(":")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit():
            raise ValueError(f"--autoscale takes MIN:MAX (two whole numbers), got {value!r}")
        return int(low), int(high)

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> UpConfig:
        if self.autoscale is None:
            return self
        if self.replicas is not None:
            raise ValueError("--replicas and --autoscale exclude each other")
        low, high = self.autoscale
        if not 0 <= low <= high or high < 1:
            raise ValueError(f"--autoscale needs 0 <= MIN <= MAX and MAX >= 1, got {low}:{high}")
        return self

    def replica_config(self) -> ReplicaConfig:
        return ReplicaConfig(**self.model_dump(include=set(ReplicaConfig.model_fields)))


class StatusConfig(CommandOptions):
    """Show the deployed policy versions and their replicas."""

    address: str = Field(
        "auto",
        description="Ray cluster to ask (HEAD:6379, or auto: the one on this machine)",
    )


class DownConfig(StatusConfig):
    """Remove one policy version, or the whole fleet."""

    version: str | None = Field(
        None, pattern=VERSION_PATTERN, description="remove only this version (default: all, and Serve itself)"
    )
