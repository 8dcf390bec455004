"""A tiny but real Semore policy file for serving tests and the serving benchmark.

The graph has the exported policy's contract (uint8 frames [B, K, H, W, 3] -> float32 actions
[B, A] in the spec's bounds, PolicySpec JSON in the metadata) and every output depends on every
pixel of every frame, so a test that compares served actions with local ones catches a wrong
frame order, a missed reset or a mixed-up stream.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from semore_runtime.spec import SPEC_METADATA_KEY, PolicySpec

OPSET = 17


def build_tiny_policy(
    path: str | os.PathLike,
    height: int = 32,
    width: int = 32,
    frame_stack: int = 3,
    action_dim: int = 2,
    seed: int = 0,
) -> Path:
    """Writes the policy to ``path`` and returns it.

    frames -> Cast float -> /255 - 0.5 -> flatten [B, K*H*W*3] -> MatMul (seeded weights) ->
    + per-frame mean features (ReduceMean over H, W, MatMul) -> Tanh -> scaled into the bounds.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    n_pixels = frame_stack * height * width * 3
    # Scaled so a random frame gives pre-activations of order 1: actions spread over the range.
    w_pix = (rng.standard_normal((n_pixels, action_dim)) * (3.0 / np.sqrt(n_pixels))).astype(np.float32)
    w_mean = (rng.standard_normal((frame_stack * 3, action_dim)) * 2.0).astype(np.float32)
    low = np.full(action_dim, -1.0, dtype=np.float32)
    high = np.full(action_dim, 1.0, dtype=np.float32)

    spec = PolicySpec(
        height=height,
        width=width,
        frame_stack=frame_stack,
        action_dim=action_dim,
        action_low=low.tolist(),
        action_high=high.tolist(),
        env_id="test:tiny",
        encoder_kind="pixel",
        teacher_kind="none",
        training_frames=0,
    )

    inits = [
        numpy_helper.from_array(np.array(1.0 / 255.0, dtype=np.float32), "inv255"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        numpy_helper.from_array(np.array([0, n_pixels], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([0, frame_stack * 3], dtype=np.int64), "mean_shape"),
        numpy_helper.from_array(w_pix, "w_pix"),
        numpy_helper.from_array(w_mean, "w_mean"),
        numpy_helper.from_array(((high - low) / 2).astype(np.float32), "scale"),
        numpy_helper.from_array(((high + low) / 2).astype(np.float32), "shift"),
    ]
    nodes = [
        helper.make_node("Cast", ["frames"], ["x_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x_f", "inv255"], ["x_unit"]),
        helper.make_node("Sub", ["x_unit", "half"], ["x"]),
        helper.make_node("Reshape", ["x", "flat_shape"], ["x_flat"]),
        helper.make_node("MatMul", ["x_flat", "w_pix"], ["h_pix"]),
        helper.make_node("ReduceMean", ["x"], ["x_mean"], axes=[2, 3], keepdims=0),  # [B, K, 3]
        helper.make_node("Reshape", ["x_mean", "mean_shape"], ["x_mean_flat"]),
        helper.make_node("MatMul", ["x_mean_flat", "w_mean"], ["h_mean"]),
        helper.make_node("Add", ["h_pix", "h_mean"], ["h"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Mul", ["t", "scale"], ["t_scaled"]),
        helper.make_node("Add", ["t_scaled", "shift"], [spec.output_name]),
    ]
    graph = helper.make_graph(
        nodes,
        "semore_tiny_policy",
        [
            helper.make_tensor_value_info(
                spec.input_name, TensorProto.UINT8, ["batch", frame_stack, height, width, 3]
            )
        ],
        [helper.make_tensor_value_info(spec.output_name, TensorProto.FLOAT, ["batch", action_dim])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="semore-tests"
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    helper.set_model_props(model, {SPEC_METADATA_KEY: spec.model_dump_json()})
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
