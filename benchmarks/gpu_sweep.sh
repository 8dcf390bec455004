#!/usr/bin/env bash
# The GPU evidence sweep on the device machine, within its 10-minute call:
#   bash benchmarks/gpu_sweep.sh OUTDIR [SPEC]     (carry .whl and .gl: see tools/gpu_bundle.py)
# It installs the carried wheels and GL loaders (benchmarks/gpu_env.sh), runs the sweep with the
# local backend for at most $BUDGET seconds (default 540), and keeps OUTDIR current every 30 s:
# curves.json (every trial's state and learning curve so far, so a run that is cut off still
# returns its curves), the report (report.json, report.md, curves.png, retention.png) of the
# trials that finished, and trials.tgz: the sweep folder's small records (sweep.json, trial.json,
# trial.log, summaries, CSV logs, eval JSONs, curve PNGs; no checkpoint.pt, replay .npz,
# policy.onnx, tb/ or videos), to unpack into sweeps-out/NAME here. Plus sweep.log: 7 files.
# OUTDIR stays flat: the device returns at most 8 files, two folders down.
# Environment:
#   PYTHON (python3)   the interpreter; wheels are installed only into a Python 3.12, the device's
#   BUDGET (540)       seconds the sweep may run; then it stops and a later call resumes it
#   SWEEP_DIR          the sweep folder (default sweeps-out/NAME); a folder in /tmp survives between
#                      back-to-back calls while the machine stays warm, and the call resumes it
#   RESTORE            a trials.tgz from an earlier call, unpacked into an empty SWEEP_DIR: its
#                      finished trials are not run again (unfinished ones restart). A path from the
#                      repository root; carry it, e.g. as .gpu_in/trials.tgz (.git/info/exclude)
#   MAX_CONCURRENT     trials at a time, in place of the spec's (semore-sweep --max-concurrent)
#   SEEDS              only these of the spec's seeds, e.g. "1 2 3" (semore-sweep --seeds)
#   DETACH=1           the sweep outlives the call: at BUDGET the call returns what finished and
#                      leaves the sweep running; a next call with the same SWEEP_DIR (within the
#                      machine's 30 s warm window) finds it running and waits for it again
#   MPS=1              start CUDA's multi-process service first, so that the trials' kernels share
#                      the GPU at once instead of taking turns
#   SEMORE_COMMIT      the commit the copied tree is at (no git history travels): trials record it
#   DRY_RUN=1          a CPU rehearsal: installs nothing, unpacks nothing into /
set -uo pipefail
out=${1:?usage: benchmarks/gpu_sweep.sh OUTDIR [SPEC]}
spec=${2:-sweeps/gpu_evidence.yaml}
mkdir -p "$out" && out=$(cd "$out" && pwd)
budget=${BUDGET:-540}
cd "$(dirname "$0")/.."
sweep=${SWEEP_DIR:-sweeps-out/$(basename "$spec" .yaml)}
source benchmarks/gpu_env.sh
gpu_env_report 2>&1 | tee "$out/sweep.log"

if [ -n "${RESTORE:-}" ] && [ ! -f "$sweep/sweep.json" ]; then
  mkdir -p "$sweep" && tar -xzf "$RESTORE" -C "$sweep" && echo "restored $(tar -tzf "$RESTORE" | grep -c '/trial.json$') trial records from $RESTORE"
fi

collect() {
  "$python" -m evidence.report "$sweep" --out "$out" --curves "$out/curves.json" --reps 1000 >/dev/null 2>&1
}
pack() {
  # The small records only, as .gitignore keeps them in sweeps-out/: built aside, then moved in.
  [ -f "$sweep/sweep.json" ] || return 0
  local tmp
  tmp=$(mktemp /tmp/trials.XXXXXX) && chmod 644 "$tmp" &&
    tar -czf "$tmp" -C "$sweep" --exclude=checkpoint.pt --exclude='*.npz' --exclude=policy.onnx \
      --exclude=tb --exclude=ray --exclude='*.mp4' --exclude='*.gif' --exclude='*.tmp' --exclude='*.tmp.*' . &&
    mv -f "$tmp" "$out/trials.tgz"
}
collector_loop() {
  # Stopped by TERM between two passes, never midway: the final pass below then runs alone.
  local stop='' nap
  trap 'stop=1' TERM
  while [ -z "$stop" ]; do
    sleep 30 &
    nap=$!
    wait $nap
    kill $nap 2>/dev/null
    [ -z "$stop" ] && { collect; pack; }
  done
}
collector_loop &
collector=$!
trap 'kill $collector 2>/dev/null' EXIT

pidfile="$sweep.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "a sweep is already running in $sweep (pid $(cat "$pidfile")): waiting for it" | tee -a "$out/sweep.log"
else
  if [ -n "${MPS:-}" ] && nvidia-cuda-mps-control -d; then
    # A service that clients cannot reach would fail every trial: check one, else stop it.
    if timeout 120 "$python" -c 'import torch; torch.ones(1, device="cuda").sum().item()'; then
      echo "CUDA MPS started" | tee -a "$out/sweep.log"
    else
      echo quit | nvidia-cuda-mps-control
      echo "CUDA MPS stopped again: a client could not use it" | tee -a "$out/sweep.log"
    fi
  fi
  args=(--backend local --spec "$spec" --out "$sweep")
  [ -f "$sweep/sweep.json" ] && args+=(--resume)
  [ -n "${MAX_CONCURRENT:-}" ] && args+=(--max-concurrent "$MAX_CONCURRENT")
  # shellcheck disable=SC2206 # SEEDS is a list of numbers
  [ -n "${SEEDS:-}" ] && args+=(--seeds $SEEDS)
  # Its own session, so that it can outlive this call (DETACH); its log goes on in $sweep.log.
  setsid "$python" -m evidence.sweep "${args[@]}" >>"$sweep.log" 2>&1 &
  echo $! >"$pidfile"
fi
pid=$(cat "$pidfile")
started=$SECONDS
while kill -0 "$pid" 2>/dev/null && [ $((SECONDS - started)) -lt "$budget" ]; do sleep 5; done
if kill -0 "$pid" 2>/dev/null; then
  if [ -n "${DETACH:-}" ]; then
    status="still running (DETACH: a next call waits for it)"
  else
    kill -TERM "$pid" # the sweep ends its trials' processes; --resume continues them
    wait "$pid" 2>/dev/null
    status="exit 124 (stopped at the ${budget} s budget; --resume continues it)"
  fi
else
  wait "$pid" 2>/dev/null
  status="exit $?"
fi
tail -n 40 "$sweep.log" | tee -a "$out/sweep.log"
kill $collector 2>/dev/null
wait $collector 2>/dev/null
collect
pack
echo "sweep $status" | tee -a "$out/sweep.log"
echo "trials.tgz: $(tar -tzf "$out/trials.tgz" 2>/dev/null | grep -c '/trial.json$') trial records; unpack with: mkdir -p sweeps-out/NAME && tar -xzf trials.tgz -C sweeps-out/NAME"
files=$(find "$out" -type f | wc -l)
[ "$files" -le 8 ] || echo "warning: $out holds $files files; the device returns 8 at most" >&2
exit 0
