# The GPU machine's environment, sourced (not run) by benchmarks/gpu_*.sh from the repository root,
# so the rule lives in one place. The machine is bare and offline: what it lacks travels with the
# call (carry .whl and .gl; tools/gpu_bundle.py builds both; the device tool's README says how).
#   - .gl/*.deb: the EGL/OpenGL loaders for headless MuJoCo rendering, unpacked into / then ldconfig;
#   - .whl/*.whl: mujoco, dm_control, pydantic, imageio-ffmpeg..., installed into $SITE (default
#     /tmp/site) and put first on PYTHONPATH. Only into a Python 3.12, the device's, which the
#     wheels are built for.
# DRY_RUN=1 (a CPU rehearsal here) touches nothing outside the repository: no dpkg into /, no
# install; the scripts then run the same steps at tiny sizes with $PYTHON (e.g. .venv/bin/python).
# Defines: python, gpu_env_report (prints what the machine has and renders one frame through EGL),
# use_ort_cuda (installs ONNX Runtime's CUDA provider from carried pieces; points the loader at
# the CUDA libraries).

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

use_ort_cuda() {
  # ONNX Runtime's CUDA provider for this run, from the pieces tools/ort_cuda_pieces.py splits
  # onnxruntime-gpu and the serving wheels into (carried into $ORT_PIECES, default
  # /tmp/ort_pieces, over back-to-back calls): joined and checked against their SHA-256, then
  # installed into a virtual environment, $ORT_VENV (default /tmp/ort_venv), that sees the
  # device's packages behind its own. Not PYTHONPATH: benchmarks.serve_latency starts the server
  # with PYTHONPATH set to the repository alone, which would hide them, whereas a child started
  # with sys.executable keeps the environment. Both the device's CPU onnxruntime and
  # onnxruntime-gpu are the import package `onnxruntime`: the environment's own comes first, and
  # its grpcio and protobuf, which the generated stubs need new enough, likewise. Sets `python` to
  # that environment's interpreter. Once per warm machine: a later call finds the same bundle.
  # DRY_RUN=1 installs only what ORT_PIECES holds, into ORT_VENV.
  local pieces=${ORT_PIECES:-/tmp/ort_pieces} venv=${ORT_VENV:-/tmp/ort_venv} sha site
  if [ -f "$pieces/manifest.json" ]; then
    sha=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["sha256"])' "$pieces/manifest.json")
    if [ "$(cat "$venv/bundle.sha256" 2>/dev/null)" != "$sha" ]; then
      rm -rf "$venv" && "$python" -m venv --without-pip "$venv" || { echo "use_ort_cuda: no venv at $venv" >&2; return 1; }
      site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
      # The device's site folders after the environment's own, with their .pth files (addsitedir).
      "$python" -c 'import site; print("".join(f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages()))' \
        >"$site/device_site.pth"
      "$python" tools/ort_cuda_pieces.py join "$pieces" --out "$venv/wheels" >/dev/null &&
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$venv"/wheels/*.whl ||
        { echo "use_ort_cuda: joining or installing $pieces failed" >&2; return 1; }
      rm -rf "$venv/wheels"
      echo "$sha" >"$venv/bundle.sha256"
      echo "use_ort_cuda: installed the bundle of $pieces (sha256 $sha) into $venv"
    else
      echo "use_ort_cuda: $venv holds the bundle of $pieces already"
    fi
    python=$venv/bin/python
  fi
  # The CUDA libraries the provider loads (cuBLAS, cuRAND and the runtime when it is loaded; cuDNN,
  # cuFFT and NVRTC later) are the nvidia-* wheels' lib folders, which no loader path names:
  # onnxruntime.preload_dlls() looks for them beside onnxruntime, here another site folder.
  local libs
  libs=$("$python" -c 'import glob, os, nvidia; print(":".join(sorted({os.path.dirname(f) for root in nvidia.__path__ for f in glob.glob(os.path.join(root, "*", "lib", "lib*.so*"))})))' 2>/dev/null)
  [ -n "$libs" ] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  "$python" - <<'PY'
import importlib, os, subprocess, sys

import onnxruntime as ort

here = os.path.dirname(ort.__file__)
print(f"python {sys.executable}; onnxruntime {ort.__version__} from {here}; providers {ort.get_available_providers()}")
for name in ("grpc", "google.protobuf", "pydantic", "prometheus_client"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', getattr(module, 'VERSION', '?'))} from {os.path.dirname(module.__file__)}")
    except Exception as exc:  # report them all; the run fails where it needs one
        print(f"{name}: MISSING ({type(exc).__name__}: {exc})")
library = os.path.join(here, "capi", "libonnxruntime_providers_cuda.so")
if os.path.isfile(library):  # what the loader cannot find; libcuda.so.1 is the driver's, absent without a GPU
    ldd = subprocess.run(["ldd", library], capture_output=True, text=True).stdout
    print("CUDA provider's libraries not found:", [line.split()[0] for line in ldd.splitlines() if "not found" in line])
PY
}
