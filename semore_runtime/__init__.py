"""The torch-free Semore runtime: what a robot imports to run an exported policy.

Depends on numpy, onnxruntime(-gpu), pydantic, grpcio and protobuf only.
"""

from semore_runtime.frame_stack import FrameStack
from semore_runtime.spec import SPEC_METADATA_KEY, PolicySpec

__all__ = ["SPEC_METADATA_KEY", "FrameStack", "PolicySpec"]
