"""OnnxPolicy does not trust its file: the spec is checked against the graph at load (with one
warm-up batch), and every action is checked on its way out: NaN and inf are refused, values
outside the bounds are clamped and counted. Real ONNX Runtime on models built with ``onnx``."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from devkit.tiny_policy import WHITE, build_tiny_policy
from semore_runtime.policy import (
    CUDA,
    DeviceUnavailableError,
    NonFiniteActionError,
    OnnxPolicy,
    PolicyLoadError,
    PolicySpecMismatch,
    _cuda_driver_present,
)
from tests.helpers.serving import random_frames


def load(path) -> OnnxPolicy:
    return OnnxPolicy(path, device="cpu", threads=1, spinning=False)


def healthy_and_poisoned(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stack [K, H, W, 3] of random frames, and the same stack with an all-white newest frame."""
    healthy = random_frames(3, seed=seed)
    poisoned = healthy.copy()
    poisoned[-1] = WHITE
    return healthy, poisoned


@pytest.mark.parametrize("poison", ["nan", "inf"])
def test_a_non_finite_action_is_never_returned(tmp_path, poison):
    policy = load(build_tiny_policy(tmp_path / "poisoned.onnx", poison=poison))
    clean = load(build_tiny_policy(tmp_path / "clean.onnx"))
    healthy, poisoned = healthy_and_poisoned(seed=1)
    with pytest.raises(NonFiniteActionError, match="the policy produced a non-finite action"):
        policy.act(poisoned)
    # In a batch the whole call refuses (no partial answer to misread), naming the stack.
    with pytest.raises(NonFiniteActionError, match="stack 1 of a batch of 2"):
        policy.act(np.stack([healthy, poisoned]))
    np.testing.assert_array_equal(policy.act(healthy), clean.act(healthy))  # still usable
    assert policy.clamped_actions == 0


def test_out_of_bounds_actions_are_clamped_to_the_bounds_and_counted(tmp_path):
    policy = load(build_tiny_policy(tmp_path / "poisoned.onnx", poison="1e6"))
    clean = load(build_tiny_policy(tmp_path / "clean.onnx"))
    healthy, poisoned = healthy_and_poisoned(seed=2)
    high = np.asarray(policy.spec.action_high, dtype=np.float32)
    np.testing.assert_array_equal(policy.act(poisoned), high)  # 1e6 -> the upper bound
    assert policy.clamped_actions == 1
    batch = policy.act(np.stack([healthy, poisoned, healthy]))
    np.testing.assert_array_equal(batch[[0, 2]], clean.act(np.stack([healthy, healthy])))
    np.testing.assert_array_equal(batch[1], high)
    assert batch.dtype == np.float32
    assert policy.clamped_actions == 2  # one per clamped action, not per call
    assert clean.clamped_actions == 0


NAN = float("nan")
# case -> (build_tiny_policy arguments, what the error says: the field, the spec's value, the other)
MISMATCHES = {
    "output name": (
        {"spec_overrides": {"output_name": "act"}},
        "output_name: the spec says 'act', the graph's outputs are ['action']",
    ),
    "input name": (
        {"spec_overrides": {"input_name": "obs"}},
        "input_name: the spec says 'obs', the graph's inputs are ['frames']",
    ),
    "input dtype": (
        {"input_type": TensorProto.FLOAT},
        "frames dtype: the spec says 'tensor(uint8)', the graph's is 'tensor(float)'",
    ),
    "fixed batch": (
        {"batch_dim": 1},
        "frames batch dimension: the spec says 'dynamic', the graph fixes it at 1",
    ),
    "frame stack": (
        {"spec_overrides": {"frame_stack": 4}},
        "frame_stack: the spec says 4, the graph's frames has 3",
    ),
    "action dim": (
        {"spec_overrides": {"action_dim": 3, "action_low": [-1.0] * 3, "action_high": [1.0] * 3}},
        "action_dim: the spec says 3, the graph's action has 2",
    ),
    "NaN bound": (
        {"spec_overrides": {"action_high": [1.0, NAN]}},
        "action_high[1]: the spec says nan, a bound must be a finite number",
    ),
    "low above high": (
        {"spec_overrides": {"action_low": [-1.0, 1.0], "action_high": [1.0, -1.0]}},
        "action_low[1]: the spec says 1.0, it must be below action_high[1]=-1.0",
    ),
    "huge frames": (
        {"spec_overrides": {"height": 30000, "width": 30000, "frame_stack": 64}},
        "height: the spec says 30000, the limit is 1024",
    ),
    "huge stack": ({"spec_overrides": {"frame_stack": 64}}, "frame_stack: the spec says 64, the limit is 16"),
    "non-finite warm-up": (
        {"poison": "nan", "poison_pixel": 0},  # NaN on black frames, which the warm-up sends
        "actions: the spec says 'finite', the warm-up batch (black frames) gave non-finite actions",
    ),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_a_spec_that_does_not_fit_its_graph_is_refused_at_load(tmp_path, case):
    arguments, message = MISMATCHES[case]
    path = build_tiny_policy(tmp_path / "policy.onnx", **arguments)
    with pytest.raises(PolicySpecMismatch) as info:
        load(path)
    assert isinstance(info.value, PolicyLoadError)  # what every caller already handles
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


@pytest.mark.skipif(
    CUDA in ort.get_available_providers() and _cuda_driver_present(),
    reason="CUDA can run here: device='cuda' is expected to load",
)
def test_cuda_without_the_cuda_provider_is_a_typed_error_naming_the_cause(tmp_path):
    path = build_tiny_policy(tmp_path / "tiny.onnx")
    with pytest.raises(DeviceUnavailableError) as info:
        OnnxPolicy(path, device="cuda")
    message = str(info.value)
    assert message.startswith("device='cuda' but")
    if CUDA not in ort.get_available_providers():  # the CPU-only onnxruntime build
        assert CUDA in message and "install onnxruntime-gpu" in message
    else:  # the GPU build without a usable driver
        assert "no CUDA driver" in message
    assert OnnxPolicy(path, device="auto").provider == "CPUExecutionProvider"  # auto falls back
