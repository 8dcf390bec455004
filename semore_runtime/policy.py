"""OnnxPolicy: runs an exported Semore policy with ONNX Runtime, no torch in the process."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from semore_runtime.spec import SPEC_METADATA_KEY, PolicySpec, conflict

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class PolicyLoadError(RuntimeError):
    """The file is not a usable Semore policy; the message says why."""


class PolicySpecMismatch(PolicyLoadError):
    """The spec breaks its own rules, or the graph does not do what the spec says it does.

    Serving such a file would feed the graph frames of the wrong shape or send a robot actions
    of the wrong size or outside any bounds, so it is refused at load. The message names the
    field, the spec's value and the graph's (or the rule's).
    """


class NonFiniteActionError(RuntimeError):
    """The policy produced NaN or inf: an action no actuator may get, so none is returned."""


class DeviceUnavailableError(RuntimeError):
    """The requested execution device cannot run here; the message names the cause."""


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file: names the exact checkpoint a policy came from, and the exact policy
    a server answers with, so a client can tell that a restarted server serves another file."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
        errors = exc.errors()
        if len(errors) == 1 and errors[0]["type"] == "value_error":  # one of PolicySpec's value rules
            raise PolicySpecMismatch(f"{path}: {errors[0]['ctx']['error']}") from exc
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
    """An exported policy: uint8 frames [K, H, W, 3] (or a batch of them) to actions in env bounds.

    The file is not trusted: loading checks the spec against the graph (names, dtypes, shapes)
    and runs one warm-up batch, and every action is checked on its way out (see ``act``), so
    every consumer (semore-serve, semore-eval, a robot) gets the same guarantees.
    """

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
        # float32 like the actions, so a value exactly at a bound does not count as outside it.
        self._low = np.asarray(self.spec.action_low, dtype=np.float32)
        self._high = np.asarray(self.spec.action_high, dtype=np.float32)
        self.clamped_actions = 0  # actions that had a value outside the bounds, clamped by act()
        self._count_lock = threading.Lock()
        self._check_graph()
        self._warm_up()

    @property
    def spec_json(self) -> str:
        """The spec as the file carries it (metadata key ``SPEC_METADATA_KEY``), byte for byte."""
        return self._spec_json

    def _mismatch(self, field: str, spec_value: object, other: str) -> PolicySpecMismatch:
        return PolicySpecMismatch(f"{self.path}: {conflict(field, spec_value, other)}")

    def _check_graph(self) -> None:
        """The graph's declared input and output against the spec, before anything runs."""
        spec = self.spec
        inputs = {arg.name: arg for arg in self.session.get_inputs()}
        outputs = {arg.name: arg for arg in self.session.get_outputs()}
        if list(inputs) != [spec.input_name]:
            raise self._mismatch("input_name", spec.input_name, f"the graph's inputs are {list(inputs)}")
        if spec.output_name not in outputs:
            raise self._mismatch("output_name", spec.output_name, f"the graph's outputs are {list(outputs)}")
        sizes = (("frame_stack", spec.frame_stack), ("height", spec.height), ("width", spec.width))
        self._check_arg(inputs[spec.input_name], "tensor(uint8)", (*sizes, ("channels", spec.channels)))
        self._check_arg(outputs[spec.output_name], "tensor(float)", (("action_dim", spec.action_dim),))

    def _check_arg(self, arg: ort.NodeArg, dtype: str, sizes: tuple[tuple[str, int], ...]) -> None:
        """One graph input or output: its dtype, a dynamic batch dimension, then the spec's sizes.

        A size the graph leaves symbolic cannot be read here; the warm-up run checks it.
        """
        shape = arg.shape
        if arg.type != dtype:
            raise self._mismatch(f"{arg.name} dtype", dtype, f"the graph's is {arg.type!r}")
        if len(shape) != 1 + len(sizes):
            raise self._mismatch(f"{arg.name} rank", 1 + len(sizes), f"the graph's shape is {shape}")
        if isinstance(shape[0], int):  # micro-batching and batched act() need any batch size
            raise self._mismatch(
                f"{arg.name} batch dimension", "dynamic", f"the graph fixes it at {shape[0]}"
            )
        for (field, size), got in zip(sizes, shape[1:], strict=True):
            if isinstance(got, int) and got != size:
                raise self._mismatch(field, size, f"the graph's {arg.name} has {got} (shape {shape})")

    def _warm_up(self) -> None:
        """A batch of black stacks: the graph must run on the spec's shape and give finite actions of
        the spec's size. Two stacks, so a batch dimension that is dynamic in name only fails here."""
        batch = np.zeros((2, *self.spec.stack_shape), dtype=np.uint8)
        try:
            actions = self._run(batch)
        except Exception as exc:  # ORT's own errors: the graph cannot run on the spec's frames
            raise self._mismatch(
                "stack_shape", self.spec.stack_shape, f"the graph failed on a warm-up batch of them: {exc}"
            ) from exc
        if actions.shape != (len(batch), self.spec.action_dim):
            raise self._mismatch(
                "action_dim", self.spec.action_dim, f"the warm-up batch gave actions of shape {actions.shape}"
            )
        if not np.isfinite(actions).all():
            raise self._mismatch(
                "actions",
                "finite",
                f"the warm-up batch (black frames) gave non-finite actions {actions.tolist()}",
            )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        (actions,) = self.session.run([self._output], {self._input: np.ascontiguousarray(batch)})
        return actions

    def _safe(self, actions: np.ndarray) -> np.ndarray:
        """Actions fit for an actuator: NaN or inf raises, values outside the bounds are clamped.

        The common case (every value inside) costs two comparisons and no copy; a clip and a
        comparison cost about 1.5x that (7 against 5 us per call, measured here). NaN fails every
        comparison, so it always takes the slow path.
        """
        if np.less_equal(actions, self._high).all() and np.greater_equal(actions, self._low).all():
            return actions
        clamped = np.clip(actions, self._low, self._high)
        inside = clamped == actions
        finite = np.isfinite(actions).all(axis=1)
        if not finite.all():
            i = int(np.argmin(finite))
            where = f" (stack {i} of a batch of {len(actions)})" if len(actions) > 1 else ""
            raise NonFiniteActionError(
                f"the policy produced a non-finite action {actions[i].tolist()}{where}"
            )
        with self._count_lock:
            self.clamped_actions += int(np.count_nonzero(~inside.all(axis=1)))
        return clamped

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Frames [K, H, W, 3] give an action [A]; a batch [B, K, H, W, 3] gives [B, A].

        Safe by construction: an action with NaN or inf raises ``NonFiniteActionError`` (for a
        batch: no action at all is returned), and values outside the spec's bounds are clamped
        to them and counted in ``clamped_actions``.
        """
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
        actions = self._safe(self._run(batch))
        return actions[0] if single else actions
