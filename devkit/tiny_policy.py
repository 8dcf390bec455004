"""The tiny test policy: a real ONNX file with a PolicySpec, small enough for a test or a latency
benchmark, optionally poisoned to answer NaN, inf, an out-of-range action or an error."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from semore_runtime.spec import SPEC_METADATA_KEY, PolicySpec

OPSET = 17
TINY_HW = (32, 32)  # the tiny test policy's frame size (height, width)
WHITE = 255  # a poisoned policy misbehaves on a stack whose newest frame is all this value
# What a poisoned policy does on such a stack: that action becomes NaN, +inf or 1e6 (bounds are
# [-1, 1]), or the whole model call raises.
Poison = Literal["nan", "inf", "1e6", "raise"]


def build_tiny_policy(
    path: str | os.PathLike,
    height: int = TINY_HW[0],
    width: int = TINY_HW[1],
    frame_stack: int = 3,
    action_dim: int = 2,
    seed: int = 0,
    *,
    poison: Poison | None = None,
    poison_pixel: int = WHITE,
    spec_overrides: dict | None = None,
    input_type: int = TensorProto.UINT8,
    batch_dim: str | int = "batch",
) -> Path:
    """Writes a tiny but real Semore policy file to ``path`` and returns it.

    The graph has the exported policy's contract (uint8 frames [B, K, H, W, 3] -> float32 actions
    [B, A] in the spec's bounds, PolicySpec JSON in the metadata) and every output depends on every
    pixel of every frame, so a test that compares served actions with local ones catches a wrong
    frame order, a missed reset or a mixed-up stream.

    frames -> Cast float -> /255 - 0.5 -> flatten [B, K*H*W*3] -> MatMul (seeded weights) ->
    + per-frame mean features (ReduceMean over H, W, MatMul) -> Tanh -> scaled into the bounds.

    Broken files, for the tests that the runtime refuses or contains them: ``poison`` makes the
    graph misbehave on a stack whose newest frame is all ``poison_pixel`` (white by default, so
    the all-black warm-up passes and only that input fails); ``spec_overrides`` replaces fields
    of the stored spec JSON as is, unvalidated, so the spec can disagree with the graph or break
    its own rules; ``input_type`` and ``batch_dim`` change the graph's declared input.
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
        helper.make_node("Add", ["t_scaled", "shift"], ["clean" if poison else spec.output_name]),
    ]
    if poison:
        poison_inits, poison_nodes = _poison_nodes(
            poison, poison_pixel, frame_stack, action_dim, spec.output_name
        )
        inits += poison_inits
        nodes += poison_nodes
    graph = helper.make_graph(
        nodes,
        "semore_tiny_policy",
        [
            helper.make_tensor_value_info(
                spec.input_name, input_type, [batch_dim, frame_stack, height, width, 3]
            )
        ],
        [helper.make_tensor_value_info(spec.output_name, TensorProto.FLOAT, [batch_dim, action_dim])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="semore-tests"
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    spec_json = json.dumps(json.loads(spec.model_dump_json()) | (spec_overrides or {}))
    helper.set_model_props(model, {SPEC_METADATA_KEY: spec_json})
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _poison_nodes(
    poison: Poison, pixel: int, frame_stack: int, action_dim: int, output: str
) -> tuple[list, list]:
    """Initializers and nodes that turn ``clean`` [B, A] into ``output``, poisoned where the newest
    frame of a stack is all ``pixel``."""
    inits = [
        numpy_helper.from_array(np.array([frame_stack - 1], dtype=np.int64), "newest_start"),
        numpy_helper.from_array(np.array([frame_stack], dtype=np.int64), "newest_end"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "stack_axis"),
        numpy_helper.from_array(np.array(pixel / 255.0 - 0.5, dtype=np.float32), "poison_level"),
        numpy_helper.from_array(np.array(0.5 / 255.0, dtype=np.float32), "half_step"),
    ]
    nodes = [  # hit [B, 1]: every value of the newest frame is within half a step of the level
        helper.make_node("Slice", ["x", "newest_start", "newest_end", "stack_axis"], ["newest"]),
        helper.make_node("Sub", ["newest", "poison_level"], ["off"]),
        helper.make_node("Abs", ["off"], ["dist"]),
        helper.make_node("ReduceMax", ["dist"], ["max_dist"], axes=[2, 3, 4], keepdims=0),  # [B, 1]
        helper.make_node("Less", ["max_dist", "half_step"], ["hit"]),
    ]
    if poison != "raise":
        value = {"nan": np.nan, "inf": np.inf, "1e6": 1e6}[poison]
        inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), "poison_value"))
        nodes.append(helper.make_node("Where", ["hit", "poison_value", "clean"], [output]))
        return inits, nodes
    # Gather columns 0..A-1, shifted out of range when any stack of the call is hit: ONNX Runtime raises.
    inits += [
        numpy_helper.from_array(np.arange(action_dim, dtype=np.int64), "columns"),
        numpy_helper.from_array(np.array(1000, dtype=np.int64), "out_of_range"),
    ]
    nodes += [
        helper.make_node("Cast", ["hit"], ["hit_int"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["hit_int"], ["any_hit"], axes=[0, 1], keepdims=0),  # []
        helper.make_node("Mul", ["any_hit", "out_of_range"], ["column_shift"]),
        helper.make_node("Add", ["columns", "column_shift"], ["picked"]),
        helper.make_node("Gather", ["clean", "picked"], [output], axis=1),
    ]
    return inits, nodes
