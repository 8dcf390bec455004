#!/usr/bin/env bash
# Training speed on the GPU machine at the reference settings: Semore against pixel, updates/s
# and env frames/s with the update compiled as the config says (encoder.compile: true there), and
# one real trial's frames/s per encoder (benchmarks/train_speed.py --trial-seconds).
#   bash benchmarks/gpu_train_speed.sh OUTDIR        (carry .whl and .gl: see tools/gpu_bundle.py)
# Writes OUTDIR/train_speed_gpu.json (rewritten after every measurement, so a run cut off keeps
# what it measured; copy it to benchmarks/results/train_speed_gpu.json) and OUTDIR/train_speed.log.
# About 3 minutes on an H200; the measurement is stopped at BUDGET seconds (default 200) whatever
# happens, compilation included. Each measurement is time-boxed (warm-up and compilation aside).
# Environment:
#   PYTHON (python3)   the interpreter; wheels are installed only into a Python 3.12, the device's
#   BUDGET (200)       seconds the measurement may take in all
#   COMPILE (config)   true, false or config: how the encoders are compiled
#   DRY_RUN=1          a CPU rehearsal of the same steps at tiny sizes (well under a minute with
#                      .venv/bin/python): installs nothing, unpacks nothing into /, compiles
#                      nothing unless COMPILE says so
set -uo pipefail
out=${1:?usage: benchmarks/gpu_train_speed.sh OUTDIR}
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
log="$out/train_speed.log"
gpu_env_report 2>&1 | tee "$log"

if [ -n "${DRY_RUN:-}" ]; then
  budget=${BUDGET:-120}
  compile=${COMPILE:-false}
  # tests/helpers/training.py's TINY sizes; the trial keeps its own frame budget (train_speed.py TRIAL).
  sizes=(env.image_size=32 env.action_repeat=8 env.render_quality=fast encoder.channels=8 encoder.layers=2
    encoder.feature_dim=16 encoder.attention_grid=3 agent.batch_size=16 agent.hidden_dim=32
    teacher.map_size=8 train.seed_frames=160)
  args=(--device cpu --rounds 2 --updates 2 --env-steps 40 --time-box 2
    --trial-seconds 2 --trial-warmup 2 --trial-max-seconds 20)
else
  budget=${BUDGET:-200}
  compile=${COMPILE:-config}
  sizes=()
  args=(--device cuda --rounds 100 --updates 5 --env-steps 5000 --time-box 10
    --trial-seconds 15 --trial-warmup 20 --trial-max-seconds 50)
fi
sets=()
for s in "${sizes[@]}"; do sets+=(--set "$s"); done

timeout -k 10 "$budget" "$python" -m benchmarks.train_speed --settings reference --encoders semore pixel \
  --compile "$compile" "${args[@]}" "${sets[@]}" --json "$out/train_speed_gpu.json" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
echo "train_speed exit $status (124: stopped at the ${budget} s budget; the JSON holds what was measured)" | tee -a "$log"
"$python" - "$out/train_speed_gpu.json" <<'EOF' 2>&1 | tee -a "$log"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError) as exc:
    sys.exit(f"no results: {exc}")
ref = r["settings"].get("reference", {})
for kind in ("semore", "pixel"):
    e = ref.get(kind)
    if e:
        trial = e.get("trial", {}).get("frames_per_s")
        print(f"{kind}: {e['updates_per_s']} updates/s, {e['env_frames_per_s']} env frames/s, one trial {trial} frames/s")
print(f"semore / pixel update time: {ref.get('semore_over_pixel')}; "
      f"semore / pixel trial frames/s: {ref.get('trial_semore_over_pixel_frames_per_s')}")
EOF
exit 0
