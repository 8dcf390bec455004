"""Training stack for Semore: environments, teachers, networks, the SAC learner and the trainer."""

import importlib.util

# Load order matters: triton (torch's compiler backend, loaded lazily by torch.optim and
# torch.compile) bundles its own LLVM, and loading it after Mesa's EGL driver (dm_control
# rendering) segfaults the process. Loading it first, whenever it is installed, makes every
# import order safe; without torch (semore-eval on a robot) nothing changes.
if importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401
