"""The torch-free Semore runtime: what a robot imports to run an exported policy.

Depends on numpy, onnxruntime(-gpu), pydantic, grpcio and protobuf only.

Importing it turns gRPC's fork support off unless the environment already sets
GRPC_ENABLE_FORK_SUPPORT. With it on, grpcio (1.80 on, 1.85 included) restarts its poller in every
forked child, and a child forked while calls are in flight can die before it runs its program
(grpc/grpc#43055): os.fork, multiprocessing's fork, or subprocess with a preexec_fn (imageio-ffmpeg
starts ffmpeg that way) beside a busy `PolicyClient`. Measured here: ffmpeg, started to write a
video beside a thread making calls, failed in 18 of 150 tries with it on and in none of 150 with it
off. No Semore process forks a child that uses gRPC, which is all that fork support is for. gRPC
reads the setting when it is first imported, so import semore_runtime before grpc.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from semore_runtime.frame_stack import FrameStack  # noqa: E402
from semore_runtime.spec import SPEC_METADATA_KEY, PolicySpec  # noqa: E402

__all__ = ["SPEC_METADATA_KEY", "FrameStack", "PolicySpec"]
