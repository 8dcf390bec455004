#!/usr/bin/env bash
# The GPU evidence sweep on the device machine, within its 10-minute call:
#   bash benchmarks/gpu_sweep.sh OUTDIR [SPEC]     (carry .whl and .gl: see tools/gpu_bundle.py)
# It installs the carried wheels and GL loaders, runs the sweep with the local backend for at most
# $BUDGET seconds (default 540), and keeps OUTDIR current every 30 s: curves.json (every trial's
# state and learning curve so far, so a run that is cut off still returns its curves), then the
# report (report.json, report.md, curves.png, retention.png) of the trials that finished.
# PYTHON (default python3) names the interpreter; the wheels are installed only into a Python 3.12,
# the device's, for which tools/gpu_bundle.py builds them. OUTDIR stays flat: the device returns at most 8 files, two folders down.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_sweep.sh OUTDIR [SPEC]}
spec=${2:-sweeps/gpu_evidence.yaml}
python=${PYTHON:-python3}
budget=${BUDGET:-540}
sweep=${SWEEP_DIR:-sweeps-out/$(basename "$spec" .yaml)}
cd "$(dirname "$0")/.."
mkdir -p "$out"

if compgen -G ".gl/*.deb" >/dev/null; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if compgen -G ".whl/*.whl" >/dev/null && "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MUJOCO_GL=egl PYTHONUNBUFFERED=1

collect() {
  "$python" -m evidence.report "$sweep" --out "$out" --curves "$out/curves.json" --reps 1000 >/dev/null 2>&1
}
(while sleep 30; do collect; done) &
collector=$!
trap 'kill $collector 2>/dev/null' EXIT

resume=()
[ -f "$sweep/sweep.json" ] && resume=(--resume)
timeout "$budget" "$python" -m evidence.sweep --backend local --spec "$spec" --out "$sweep" "${resume[@]}" \
  2>&1 | tee "$out/sweep.log"
status=${PIPESTATUS[0]}
collect
echo "sweep exit $status (124: stopped at the ${budget} s budget; --resume continues it)"
exit 0
