# The GPU machine's environment, sourced (not run) by benchmarks/gpu_*.sh from the repository root,
# so the rule lives in one place. The machine is bare and offline: what it lacks travels with the
# call (carry .whl and .gl; tools/gpu_bundle.py builds both, docs in /work/.library/device/README.md).
#   - .gl/*.deb: the EGL/OpenGL loaders for headless MuJoCo rendering, unpacked into / then ldconfig;
#   - .whl/*.whl: mujoco, dm_control, pydantic, imageio-ffmpeg..., installed into $SITE (default
#     /tmp/site) and put first on PYTHONPATH. Only into a Python 3.12, the device's, which the
#     wheels are built for.
# DRY_RUN=1 (a CPU rehearsal here) touches nothing outside the repository: no dpkg into /, no
# install; the scripts then run the same steps at tiny sizes with $PYTHON (e.g. .venv/bin/python).
# Defines: python, gpu_env_report (prints what the machine has and renders one frame through EGL).

python=${PYTHON:-python3}
if [ -z "${DRY_RUN:-}" ]; then
  if compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  # Point glvnd at the NVIDIA driver when it is there (the README's fix for "no driver found").
  nvidia_egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  nvidia_vk=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [ -f "$nvidia_egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-$nvidia_egl}
  [ -f "$nvidia_vk" ] && export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$nvidia_vk}
  if compgen -G ".whl/*.whl" >/dev/null && "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    site=${SITE:-/tmp/site}
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl ||
      { echo "gpu_env: installing .whl/ into $site failed" >&2; exit 1; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1

gpu_env_report() {
  # One line per fact; a failure here (no GPU, no EGL) shows at the top of the log, not mid-run.
  command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
  "$python" - <<'EOF'
import importlib, os, sys, time
print(f"python {sys.version.split()[0]} at {sys.executable}; {os.cpu_count()} cores")
for name in ("torch", "mujoco", "dm_control", "pydantic", "imageio_ffmpeg", "numpy"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')} from {os.path.dirname(module.__file__)}")
    except Exception as exc:  # report all of them, then let the run fail where it needs one
        print(f"{name}: MISSING ({type(exc).__name__}: {exc})")
try:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch sees CUDA: {torch.cuda.is_available()} ({gpu})")
except Exception:
    pass
try:
    from dm_control import suite
    tic = time.perf_counter()
    env = suite.load("cartpole", "swingup")
    env.reset()
    frame = env.physics.render(84, 84)
    print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}: rendered {frame.shape} in {time.perf_counter() - tic:.2f} s")
except Exception as exc:
    print(f"rendering FAILED: {type(exc).__name__}: {exc}")
EOF
}
