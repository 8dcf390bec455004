#!/usr/bin/env bash
# semore-serve on the GPU machine's CUDA provider, side by side with the CPU provider on the same
# machine, for a Semore policy at the reference settings (configs/reference/cartpole_swingup.yaml:
# 84 px, K=3), freshly initialised: latency does not depend on the weights.
#   bash benchmarks/gpu_serve.sh OUTDIR
# in the last of the device calls that carry ONNX Runtime's CUDA provider in pieces
# (tools/ort_cuda_pieces.py gives the sequence; use_ort_cuda in benchmarks/gpu_env.sh installs it).
# Per provider, CUDA first, so that a run cut short keeps the figures that need the GPU:
#   - in-process OnnxPolicy.act p50/p99 at batch 1 and 32 (benchmarks/ort_batch_latency.py);
#   - `semore-serve --device` on loopback (benchmarks/serve_latency.py): single-stream p50/p99
#     through PolicyClient, aggregate frames/s and p99 at 1, 8, 32 and 128 concurrent streams, and
#     the micro-batch sizes reached at each (mean and max).
# Writes OUTDIR/serve_latency_gpu.json (rebuilt after every step, so that a run cut short keeps
# what it measured; copy it to benchmarks/results/serve_latency_gpu.json), the four parts it is
# built from ({in_process,serve}_{cuda,cpu}.json) and gpu_serve.log: 6 files, OUTDIR flat.
# About 3 minutes on the device by estimate (not run there yet). Exits 1 if a step failed.
# Environment:
#   PYTHON (python3)     the interpreter (use_ort_cuda replaces it with its environment's)
#   BUDGET (420)         seconds all steps may take; each is stopped at what is left
#   ORT_PIECES, ORT_VENV where the pieces are and where they are installed: see use_ort_cuda
#   DRY_RUN=1            a CPU rehearsal of the same steps (about a minute with
#                        .venv/bin/python on 2 busy cores): the CPU provider in both columns, a 32 px policy, few
#                        frames per measurement; installs only what ORT_PIECES holds, into ORT_VENV
set -uo pipefail
out=${1:?usage: benchmarks/gpu_serve.sh OUTDIR}
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh

if [ -n "${DRY_RUN:-}" ]; then
  gpu=cpu
  budget=${BUDGET:-120}
  # tests/helpers/training.py's TINY encoder; the frame stack stays the reference's 3.
  sizes=(env.image_size=32 encoder.channels=8 encoder.layers=2 encoder.feature_dim=16
    encoder.attention_grid=3 agent.hidden_dim=32)
  in_process=(--reps 20 --warmup 2 --time-box 2)
  serve=(--frames 30 --warmup 5 --streams 1,8,32,128 --frames-per-stream 3 --workers 1)
else
  gpu=cuda
  budget=${BUDGET:-420}
  sizes=()
  in_process=(--reps 2000 --warmup 100 --time-box 10)
  serve=(--frames 3000 --warmup 300 --streams 1,8,32,128 --frames-per-stream 300 --workers 4)
fi
deadline=$((SECONDS + budget))
failed=0

step() {
  # NAME COMMAND...: runs it within what is left of the budget and logs its exit status.
  local name=$1 left=$((deadline - SECONDS)) started=$SECONDS status
  shift
  if [ "$left" -le 0 ]; then
    echo "$name: skipped, the ${budget} s budget is spent"
    failed=1
    return
  fi
  timeout -k 10 "$left" "$@"
  status=$?
  echo "$name exit $status after $((SECONDS - started)) s$([ "$status" = 124 ] && echo " (stopped at the ${budget} s budget)")"
  [ "$status" = 0 ] || failed=1
}

collect() {
  # serve_latency_gpu.json from the parts there so far: each in full, and the issue's figures.
  GPU_NAME=${gpu_name:-} "$python" - "$out" "${sizes[@]}" <<'EOF'
import json, os, sys, time
from pathlib import Path

out = Path(sys.argv[1])


def part(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


result = {
    "benchmark": "serve_latency_gpu",
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "dry_run": bool(os.environ.get("DRY_RUN")),
    "gpu": os.environ["GPU_NAME"] or None,
    "policy": {
        "config": "configs/reference/cartpole_swingup.yaml",
        "overrides": sys.argv[2:],
        "weights": "freshly initialised (torch seed 0)",
    },
    "summary": {},
}
for label in ("cuda", "cpu"):
    in_process, serve = part(f"in_process_{label}.json"), part(f"serve_{label}.json")
    result[label] = {"in_process": in_process, "serve": serve}
    figures = {}
    if in_process:
        figures["provider"] = in_process["provider"]
        figures["in_process_p50_ms"] = {f"batch_{b}": r["p50_ms"] for b, r in in_process["batches"].items()}
    if serve:
        figures["serve_provider"] = serve["model"]["provider"]
        figures["single_stream_p50_ms"] = serve["single_stream"]["p50_ms"]
        figures["single_stream_p99_ms"] = serve["single_stream"]["p99_ms"]
        levels = serve["concurrent"]
        figures["frames_per_s_by_streams"] = {str(c["streams"]): c["frames_per_s"] for c in levels}
        figures["micro_batch_by_streams"] = {
            str(c["streams"]): {"mean": c["mean_batch_size"], "max": c["max_batch_size"]} for c in levels
        }
    result["summary"][label] = figures
tmp = out / "serve_latency_gpu.json.tmp"
tmp.write_text(json.dumps(result, indent=2) + "\n")
tmp.replace(out / "serve_latency_gpu.json")
EOF
}

main() {
  gpu_name=$(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
  echo "GPU: ${gpu_name:-none}; $(nproc) cores; budget ${budget} s"
  use_ort_cuda || return 1
  work=$(mktemp -d /tmp/gpu_serve.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  model=$work/policy.onnx
  step policy "$python" - "$model" "${sizes[@]}" <<'EOF'
import sys
from pathlib import Path

import torch

from export.onnx_export import policy_spec, to_onnx
from export.policy_graph import build_policy_graph
from training.config import load_config

# As benchmarks/export_latency.py builds them: the reference config, fresh weights, one action.
config = load_config(Path("configs/reference/cartpole_swingup.yaml"), ["device=cpu", "encoder.compile=false", *sys.argv[2:]])
torch.manual_seed(0)
low, high = [-1.0], [1.0]
graph, spec = build_policy_graph(config, low, high), policy_spec(config, low, high)
Path(sys.argv[1]).write_bytes(to_onnx(graph, spec, opset=17, fp16=False))
print(f"policy: {config.encoder.kind} encoder, stack {spec.stack_shape}, {sys.argv[1]}")
EOF
  [ -f "$model" ] || return 1
  for column in "cuda $gpu" "cpu cpu"; do
    read -r label device <<<"$column"
    step "in_process_$label" "$python" -m benchmarks.ort_batch_latency --model "$model" --device "$device" \
      --batches 1 32 "${in_process[@]}" --out "$out/in_process_$label.json"
    collect
    # Every stream comes from 127.0.0.1, and 128 is the per-client limit exactly (half of
    # --max-streams): no slack for one of the 32 streams before them that is still closing.
    step "serve_$label" "$python" -m benchmarks.serve_latency --model "$model" --device "$device" "${serve[@]}" \
      --server-arg=--max-streams-per-client=256 --out "$out/serve_$label.json"
    collect
  done
  "$python" - "$out/serve_latency_gpu.json" <<'EOF'
import json, sys

r = json.load(open(sys.argv[1]))
for label, f in r["summary"].items():
    print(f"{label}: provider {f.get('provider')}, in-process p50 {f.get('in_process_p50_ms')}, single stream "
          f"p50 {f.get('single_stream_p50_ms')} ms p99 {f.get('single_stream_p99_ms')} ms")
    print(f"  frames/s by streams {f.get('frames_per_s_by_streams')}; micro-batches {f.get('micro_batch_by_streams')}")
EOF
  files=$(find "$out" -type f | wc -l)
  [ "$files" -le 8 ] || echo "warning: $out holds $files files; the device returns 8 at most"
  echo "gpu_serve: $([ "$failed" = 0 ] && echo "every step exit 0" || echo "a step FAILED")"
  return "$failed"
}

main 2>&1 | tee "$out/gpu_serve.log"
exit "${PIPESTATUS[0]}"
