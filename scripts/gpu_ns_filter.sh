#!/usr/bin/env bash
# One prepared GPU run of Navier–Stokes 64² filtering (docs/results/ns_gpu.md, "Filtering
# on the GPU"), with the 64² emulator of scripts/gpu_ns64.sh
# (benchmarks/artifacts/ns2d-64-gpu-fp16.pt):
#   0. setup: the carried pure-Python wheels (.whl/), the package, nvidia-smi
#   1. smoke: `genfilter filter <config> --device cuda` (N = 4, 2 cycles): the CLI path
#   2. perf, N = 64 and 256: FA-APF and BPF step time, peak memory, passes, floor
#      (benchmarks/ns_gpu.py perf)
#   3. cell: coarsening 4 then subsampling 4, N = 32, BPF / EnKF / FA-APF / FlowDAS-style,
#      within the time left (benchmarks/ns_gpu.py cell)
# Everything returned is flat in $OUT (at most 8 files): log.txt, nvidia-smi.txt, perf.md/json,
# cell.md/json, runs.tgz (the run files).
#
# On the device machine (the `run` tool), from the repository root, carrying .whl:
#     bash scripts/gpu_ns_filter.sh
# Locally, a CPU rehearsal with toy sizes:
#     GPU_NS_TINY=1 OUT=/tmp/gpu_ns_out bash scripts/gpu_ns_filter.sh
set -u -o pipefail

OUT=${OUT:-outputs/ns_gpu_run}
TINY=${GPU_NS_TINY:-0}
source "$(dirname "$0")/gpu_common.sh"

if [ "$TINY" = 1 ]; then
  DEVICE=cpu PY=${PY:-.venv/bin/python} GF=(.venv/bin/genfilter)
  PERF64="--sizes 4 8 --steps 1 --reps 2 --diffusion-steps 2 --threads 1"
  CELL="--particles 4 --cycles 2 --runs 1 --diffusion-steps 2 --operators 1 --threads 1"
  CELL_BUDGET=60 END=400
else
  DEVICE=cuda PY=python3
  PERF64="--sizes 64 256 --steps 2 --reps 5 --threads 8"
  CELL="--particles 32 --cycles 8 --runs 2 --threads 8"
  CELL_BUDGET=${GPU_NS_CELL_BUDGET:-200} END=${GPU_NS_END:-400}
fi

main() {
  gpu_setup || return 1
  if [ "$TINY" != 1 ]; then
    if python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . \
        && command -v genfilter >/dev/null; then
      GF=(genfilter)
    else
      GF=(python3 -m genfilter.cli)
    fi
  fi

  echo "=== [$(elapsed) s] 1. smoke: genfilter filter --device $DEVICE"
  mkdir -p "$OUT/runs"
  cat >/tmp/ns_gpu_smoke.yaml <<EOF
name: ns64-smoke
system: ns2d
system_options: {resolution: 64}
emulator: benchmarks/artifacts/ns2d-64-gpu-fp16.pt
emulator_options: {steps: 8}
observations: {operator: coarsen, factor: 4, noise_std: 0.115}
initial: {recipe: perturbed, std: 0.0, spinup: 5.0}
filter: {method: fa-apf, particles: 4}
steps: 2
burn_in: 0
save: moments
EOF
  timeout 120 "${GF[@]}" filter /tmp/ns_gpu_smoke.yaml --device "$DEVICE" \
    --out "$OUT/runs/smoke.nc" --no-progress
  echo "=== [$(elapsed) s] smoke exit $?"

  echo "=== [$(elapsed) s] 2. perf"
  timeout 200 $PY benchmarks/ns_gpu.py perf --device "$DEVICE" --out "$OUT" $PERF64
  echo "=== [$(elapsed) s] perf exit $?"

  local left=$(( END - $(elapsed) ))
  local budget=$(( left - 60 < CELL_BUDGET ? left - 60 : CELL_BUDGET ))
  echo "=== [$(elapsed) s] 3. cell (budget $budget s, $left s left)"
  timeout "$left" $PY benchmarks/ns_gpu.py cell --device "$DEVICE" --out "$OUT" \
    --budget-s "$budget" $CELL
  echo "=== [$(elapsed) s] cell exit $?"
}

main 2>&1 | tee "$OUT/log.txt"
gpu_finish "${PIPESTATUS[0]}"
