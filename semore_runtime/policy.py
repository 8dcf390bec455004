"""OnnxPolicy: runs an exported Semore policy with ONNX Runtime, no torch in the process."""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from semore_runtime.spec import SPEC_METADATA_KEY, PolicySpec

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class PolicyLoadError(RuntimeError):
    """The file is not a usable Semore policy; the message says why."""


class DeviceUnavailableError(RuntimeError):
    """The requested execution device cannot run here; the message names the cause."""


def _cuda_driver_present() -> bool:
    # ORT lists the CUDA provider whenever the -gpu wheel is installed, then falls back to CPU
    # with an error log when there is no GPU. Probing the driver library first keeps `auto`
    # quiet on CPU-only machines.
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def read_spec(session: ort.InferenceSession, path: Path) -> tuple[PolicySpec, str]:
    """The policy spec the file carries, parsed, and its JSON exactly as stored."""
    meta = session.get_modelmeta().custom_metadata_map
    if SPEC_METADATA_KEY not in meta:
        raise PolicyLoadError(
            f"{path} is an ONNX model but carries no Semore policy spec (metadata key "
            f"'{SPEC_METADATA_KEY}'); export policies with semore-export"
        )
    spec_json = meta[SPEC_METADATA_KEY]
    try:
        return PolicySpec.model_validate_json(spec_json), spec_json
    except ValidationError as exc:
        raise PolicyLoadError(f"{path} has an invalid policy spec: {exc}") from exc


def session_options(threads: int | None = None, spinning: bool = True) -> ort.SessionOptions:
    """Low-latency defaults: one inter-op thread, intra-op threads up to the cores, spinning on.

    Spinning trades idle CPU for ~0.1-1 ms less wake-up latency per call; turn it off when the
    policy shares cores with other work (rendering, a robot's control loop).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads if threads is not None else min(4, os.cpu_count() or 1)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return options


def _providers_for(device: Device) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise DeviceUnavailableError(
                f"device='cuda' but this onnxruntime build has no {CUDA} (available: {available}); "
                "install onnxruntime-gpu"
            )
        if not _cuda_driver_present():
            raise DeviceUnavailableError(
                "device='cuda' but no CUDA driver is present (libcuda.so.1 cannot be loaded): no GPU here"
            )
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if CUDA in available and _cuda_driver_present() else [CPU]
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


class OnnxPolicy:
    """An exported policy: uint8 frames [K, H, W, 3] (or a batch of them) to actions in env bounds."""

    def __init__(
        self,
        path: str | os.PathLike,
        device: Device = "auto",
        threads: int | None = None,
        spinning: bool = True,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"policy file not found: {self.path}")
        providers = _providers_for(device)
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=session_options(threads, spinning), providers=providers
            )
        except Exception as exc:  # ORT raises its own untyped errors for unreadable files
            raise PolicyLoadError(f"{self.path} is not a loadable ONNX model: {exc}") from exc
        self.provider = self.session.get_providers()[0]
        if device == "cuda" and self.provider != CUDA:
            raise DeviceUnavailableError(
                f"device='cuda' but ONNX Runtime activated {self.provider}: the CUDA provider failed to "
                "initialise (check the CUDA and cuDNN libraries onnxruntime-gpu needs)"
            )
        log.info("policy %s runs on %s", self.path.name, self.provider)
        self.spec, self._spec_json = read_spec(self.session, self.path)
        self._input = self.spec.input_name
        self._output = self.spec.output_name

    @property
    def spec_json(self) -> str:
        """The spec as the file carries it (metadata key ``SPEC_METADATA_KEY``), byte for byte."""
        return self._spec_json

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Frames [K, H, W, 3] give an action [A]; a batch [B, K, H, W, 3] gives [B, A]."""
        frames = np.asarray(frames)
        single = frames.ndim == 4
        batch = frames[None] if single else frames
        if batch.ndim != 5 or batch.shape[1:] != self.spec.stack_shape:
            raise ValueError(
                f"frames must have shape {self.spec.stack_shape} or [B, *{self.spec.stack_shape}], "
                f"got {frames.shape}"
            )
        if batch.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {batch.dtype}")
        (action,) = self.session.run([self._output], {self._input: np.ascontiguousarray(batch)})
        return action[0] if single else action
