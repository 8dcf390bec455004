"""Checkpoint -> ONNX, verified: a file that fails the parity check is never written."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from export.policy_graph import PolicyGraph, trained_policy_graph
from semore_runtime.policy import CUDA, NonFiniteActionError, OnnxPolicy, file_sha256
from semore_runtime.spec import SPEC_METADATA_KEY, PolicySpec
from training.checkpoint import Checkpoint
from training.config import RunConfig

FP32_TOLERANCE = 1e-4
# fp16 weights and activations carry ~3 significant digits; actions live in [-1, 1]-scaled bounds.
FP16_TOLERANCE = 2e-2


class ParityError(RuntimeError):
    """ONNX Runtime and torch disagree beyond the tolerance; nothing was written."""


@dataclass
class ExportReport:
    path: Path
    spec: PolicySpec
    max_abs_diff: dict[str, float]  # per check: real frames / random frames at batch 1 and 32
    tolerance: float
    provider: str

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())


def policy_spec(
    config: RunConfig,
    action_low: list[float],
    action_high: list[float],
    training_frames: int = 0,
    sha256: str = "",
) -> PolicySpec:
    env = config.env
    return PolicySpec(
        height=env.image_size,
        width=env.image_size,
        frame_stack=env.frame_stack,
        action_dim=len(action_low),
        action_low=action_low,
        action_high=action_high,
        env_id=env.id,
        action_repeat=env.action_repeat,
        camera=env.camera,
        render_quality=env.render_quality,
        encoder_kind=config.encoder.kind,
        agent_kind=config.agent.kind,
        encoder_options=config.encoder.graph_options(),
        teacher_kind=config.teacher.kind,
        training_frames=training_frames,
        checkpoint_sha256=sha256,
    )


def to_onnx(graph: PolicyGraph, spec: PolicySpec, opset: int, fp16: bool) -> bytes:
    example = torch.zeros((1, *spec.stack_shape), dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            graph,
            (example,),
            buffer,
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            dynamic_axes={spec.input_name: {0: "batch"}, spec.output_name: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    if fp16:
        model = _to_fp16(model)
    model.doc_string = f"Semore policy for {spec.env_id} ({spec.encoder_kind} encoder)"
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_METADATA_KEY, spec.model_dump_json()
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # Inputs stay uint8 and outputs float32, so the contract is the same as the fp32 file.
    return convert_float_to_float16(model, keep_io_types=True)


def parity_frames(spec: PolicySpec, real: np.ndarray | None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    checks = {f"random_b{b}": rng.integers(0, 256, (b, *spec.stack_shape), dtype=np.uint8) for b in (1, 32)}
    if real is not None:
        checks |= {"real_b1": real[:1], "real_b32": real[:32]}
    return checks


def real_frames(config: RunConfig, count: int = 32, seed: int = 0) -> np.ndarray:
    """Stacks from the policy's own environment, under random actions."""
    from training.envs import make_env

    env = make_env(config.env, seed)
    rng = np.random.default_rng(seed)
    stacks = [env.reset().stack]
    while len(stacks) < count:
        step = env.step(env.from_unit(rng.uniform(-1, 1, env.action_dim)))
        stacks.append(step.stack)
        if step.last:
            stacks.append(env.reset().stack)
    env.close()
    return np.stack(stacks[:count])


def export_checkpoint(
    checkpoint_path: Path,
    out_path: Path,
    opset: int = 17,
    fp16: bool = False,
    real: np.ndarray | None = None,
    use_env_frames: bool = True,
) -> ExportReport:
    checkpoint = Checkpoint.load(checkpoint_path)
    graph = trained_policy_graph(checkpoint)
    config, env = checkpoint.config, checkpoint.env
    spec = policy_spec(
        config, env.action_low, env.action_high, checkpoint.frames, file_sha256(checkpoint_path)
    )
    device = "cuda" if fp16 else "cpu"
    if fp16:
        import onnxruntime as ort

        if CUDA not in ort.get_available_providers():
            raise RuntimeError("--fp16 needs the CUDA execution provider (onnxruntime-gpu on a GPU machine)")
    data = to_onnx(graph, spec, opset, fp16)

    if real is None and use_env_frames:
        real = real_frames(config)
    checks = parity_frames(spec, real)
    with torch.no_grad():
        expected = {name: graph(torch.as_tensor(frames)).numpy() for name, frames in checks.items()}
    for name, actions in expected.items():  # before any file: OnnxPolicy refuses such a graph at load
        if not np.isfinite(actions).all():
            raise ParityError(
                f"non-finite actions from torch on the {name} frames ({actions.ravel()[:4]}): the "
                "checkpoint has diverged; nothing written"
            )
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_bytes(data)
    try:
        policy = OnnxPolicy(tmp, device=device)
        diffs = {}
        for name, frames in checks.items():
            try:
                actual = policy.act(frames)
            except NonFiniteActionError as exc:  # torch was finite: the conversion broke it (fp16)
                raise ParityError(
                    f"non-finite actions from ONNX on the {name} frames: {exc}; nothing written"
                ) from exc
            diffs[name] = float(np.abs(actual - expected[name]).max())
        tolerance = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
        worst = max(diffs.values())
        if worst > tolerance:  # both sides are finite here: the checks above refused anything else
            raise ParityError(
                f"ONNX and torch differ by {worst:.2e} (> {tolerance:.0e}): {diffs}; nothing written"
            )
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(out_path, spec, diffs, tolerance, policy.provider)
