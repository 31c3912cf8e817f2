#!/usr/bin/env bash
# One prepared GPU run: several processes sharing one GPU (issue #14 item 4) and the
# Navier–Stokes 64² cells the last GPU run left (issue #12 item 5):
#   0. setup: the carried pure-Python wheels (.whl/), the package, nvidia-smi
#   1. smoke: `torchrun --nproc-per-node 2 genfilter filter configs/l63-a.yaml --device cuda`
#      (two processes on one GPU: gloo; the CLI path)
#   2. Lorenz-63 (a), FA-APF, N = 1024 and 4096: 1 process against 2 on the one GPU
#      (benchmarks/distributed_scaling.py --device cuda): speed-up, agreement, peak memory
#   3. Navier–Stokes 64², FA-APF (coarsening 4, 32 diffusion steps, Krylov 8), N = 64 and
#      256: the same comparison
#   4. Table-2 cells at 64² left by scripts/gpu_ns_filter.sh: FlowDAS-style under coarsening
#      4, then subsampling 4 (BPF, EnKF, FA-APF, FlowDAS-style), within the time left
# Everything returned is flat in $OUT: log.txt, nvidia-smi.txt, l63.md, ns.md, cell.md/json,
# runs.tgz.
#
# On the device machine (the `run` tool), from the repository root, carrying .whl:
#     bash scripts/gpu_multiprocess.sh
# Locally, a CPU rehearsal with toy sizes:
#     GPU_TINY=1 OUT=/tmp/gpu_mp_out bash scripts/gpu_multiprocess.sh
set -u -o pipefail

OUT=${OUT:-outputs/gpu_multiprocess}
TINY=${GPU_TINY:-0}
source "$(dirname "$0")/gpu_common.sh"

if [ "$TINY" = 1 ]; then
  DEVICE=cpu PY=${PY:-.venv/bin/python}
  L63="--sizes 32 --steps 2 --threads 1" NS="--sizes 32 --steps 2 --threads 1" NSDIFF=2
  CELL="--particles 4 --cycles 2 --runs 1 --diffusion-steps 2 --threads 1" END=500
else
  DEVICE=cuda PY=python3
  L63="--sizes 1024 4096 --steps 5 --threads 4" NS="--sizes 64 256 --steps 3 --threads 4"
  NSDIFF=32 CELL="--particles 32 --cycles 8 --runs 2 --threads 8" END=${GPU_END:-470}
fi

main() {
  gpu_setup || return 1
  mkdir -p "$OUT/runs"

  echo "=== [$(elapsed) s] 1. smoke: torchrun, 2 processes, genfilter filter --device $DEVICE"
  timeout 120 $PY -m torch.distributed.run --standalone --nproc-per-node 2 \
    -m genfilter.cli filter configs/l63-a.yaml --device "$DEVICE" --particles 64 --steps 3 --burn-in 0 \
    --runs 1 --out "$OUT/runs/smoke-l63.nc" --no-progress
  echo "=== [$(elapsed) s] smoke exit $?"

  echo "=== [$(elapsed) s] 2. Lorenz-63: 1 vs 2 processes"
  timeout 150 $PY benchmarks/distributed_scaling.py --device "$DEVICE" $L63 | tee "$OUT/l63.md"
  echo "=== [$(elapsed) s] l63 exit $?"

  echo "=== [$(elapsed) s] 3. Navier–Stokes 64²: 1 vs 2 processes"
  cat >/tmp/ns64_mp.yaml <<YAML
name: ns64-multiprocess
system: ns2d
system_options: {resolution: 64}
emulator: $PWD/benchmarks/artifacts/ns2d-64-gpu-fp16.pt
emulator_options: {steps: $NSDIFF}
observations: {operator: coarsen, factor: 4, noise_std: 0.115}
initial: {recipe: perturbed, std: 0.0, spinup: 5.0}
filter: {method: fa-apf, particles: 64}
steps: 3
burn_in: 0
save: moments
YAML
  timeout 200 $PY benchmarks/distributed_scaling.py --config /tmp/ns64_mp.yaml \
    --device "$DEVICE" $NS | tee "$OUT/ns.md"
  echo "=== [$(elapsed) s] ns exit $?"

  local left=$(( END - $(elapsed) ))
  echo "=== [$(elapsed) s] 4. cells ($left s left)"
  if [ "$left" -gt 90 ]; then
    timeout "$left" $PY benchmarks/ns_gpu.py cell --device "$DEVICE" --out "$OUT" \
      --kinds coarsen --methods flowdas --budget-s $(( left - 60 )) $CELL
    left=$(( END - $(elapsed) ))
  fi
  if [ "$left" -gt 90 ]; then
    timeout "$left" $PY benchmarks/ns_gpu.py cell --device "$DEVICE" --out "$OUT" \
      --kinds subsample --methods bpf enkf fa-apf flowdas --budget-s $(( left - 40 )) \
      --tag _subsample $CELL
  fi
  echo "=== [$(elapsed) s] cells done"
}

main 2>&1 | tee "$OUT/log.txt"
gpu_finish "${PIPESTATUS[0]}"
