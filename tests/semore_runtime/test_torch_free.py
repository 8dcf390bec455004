"""The runtime a robot installs must work with torch absent: import it and run a policy."""

import subprocess
import sys
import textwrap

import numpy as np

from export.onnx_export import export_checkpoint
from tests.helpers.training import ROOT, make_checkpoint

BLOCK_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name == "triton":
            raise ImportError(f"{name} is blocked: semore_runtime must not need it")
sys.meta_path.insert(0, NoTorch())
"""


def test_import_and_run_a_policy_without_torch(tmp_path):
    make_checkpoint(tmp_path / "checkpoint.pt", "semore")
    export_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "policy.onnx", use_env_frames=False)
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 48, 48, 3), dtype=np.uint8)
    np.save(tmp_path / "frames.npy", frames)
    script = BLOCK_TORCH + textwrap.dedent(
        f"""
        import numpy as np
        import semore_runtime
        from semore_runtime import FrameStack, PolicySpec
        from semore_runtime.policy import OnnxPolicy
        from semore_runtime.client import PolicyClient
        policy = OnnxPolicy({str(tmp_path / "policy.onnx")!r}, device="cpu")
        frames = np.load({str(tmp_path / "frames.npy")!r})
        stack = FrameStack(policy.spec.frame_stack, policy.spec.frame_shape)
        action = policy.act(stack.push(frames[0, -1]))
        assert action.shape == (1,), action.shape
        assert policy.act(frames).shape == (2, 1)
        assert "torch" not in sys.modules
        print("ok", policy.provider)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok CPUExecutionProvider")


def test_blocker_really_blocks_torch():
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + "import torch"], capture_output=True, text=True
    )
    assert result.returncode != 0 and "blocked" in result.stderr
