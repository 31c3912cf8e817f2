#!/usr/bin/env bash
# One prepared GPU run of the 64² Navier–Stokes diffusion emulator (docs/results/ns_gpu.md):
#   0. setup: the package and its missing pure-Python dependencies (.whl/, carried), versions,
#      nvidia-smi, a smoke test of the NS integrator / sampling / validation on the device
#   1. data:  the `genfilter data ns2d` dataset (64², default length and burn-in, more
#      trajectories), integrated on the GPU in one batch (benchmarks/ns_data_device.py)
#   2. probe: time per optimisation step of the real training loop (benchmarks/ns_gpu_step_probe.py)
#   3. train: `genfilter train ns2d --device cuda` with the epochs that fit the time left
#   4. ship:  fp16 EMA checkpoint (scripts/ship_checkpoint.py) and an fp32 EMA-only copy
#   5. validate: `genfilter validate --device cuda` (one-step energy distance vs the
#      true-vs-true floor, variance ratio, short free rollout); on the CPU with fewer states
#      if the device path failed in the smoke test
#   6. summary.json: every timing
# Everything returned is written to $OUT (at most 8 files, flat); data and the full training
# checkpoint stay in $WORK.
#
# On the device machine (the `run` tool), from the repository root:
#     bash scripts/gpu_ns64.sh                      # carry: .whl
# Locally, a tiny CPU rehearsal of every step (32², 6 trajectories, one epoch):
#     GPU_NS64_TINY=1 OUT=/tmp/gpu_ns64_out bash scripts/gpu_ns64.sh
set -u -o pipefail

OUT=${OUT:-outputs/gpu_ns64_run}
WORK=${GPU_NS64_WORK:-/tmp/gpu_ns64_work}
TINY=${GPU_NS64_TINY:-0}
mkdir -p "$OUT" "$WORK"
: >"$WORK/phases.txt"
T0=$(date +%s.%N)

if [ "$TINY" = 1 ]; then
  DEVICE=${GPU_NS64_DEVICE:-cpu}
  RES=32 TRAJ=6 LEN=5 BURN="--burn-in 1" DATA_BUDGET=60 MIN_TRAJ=6
  PROBE_ARGS="--quick --batch-sizes 4 8 --steps 2" BATCH=4 QUICK="--quick"
  T_END_TRAIN=200 T_HARD=400 MAX_EPOCHS=1
  VAL_ARGS="--states 1 --samples 8 --rollout 2 --rollout-members 1 --steps 2"
  VAL_CPU_ARGS="--states 1 --samples 8 --rollout 2 --rollout-members 1 --steps 2"
else
  DEVICE=${GPU_NS64_DEVICE:-cuda}
  RES=64 TRAJ=${GPU_NS64_TRAJ:-256} LEN=100 BURN="" DATA_BUDGET=${GPU_NS64_DATA_BUDGET:-120}
  MIN_TRAJ=64
  PROBE_ARGS="--batch-sizes 64 128 256 --steps 20" BATCH=${GPU_NS64_BATCH:-128} QUICK=""
  # seconds since the start: training should end by T_END_TRAIN, validation by T_HARD
  T_END_TRAIN=${GPU_NS64_T_END_TRAIN:-370} T_HARD=${GPU_NS64_T_HARD:-510}
  MAX_EPOCHS=${GPU_NS64_MAX_EPOCHS:-1000}
  # rollout 100 did not fit (emulator rollout: 64 denoiser calls of batch 8 per snapshot,
  # overhead-bound); rollout 20 ran in 74 s on an H200 (docs/results/ns_gpu.md)
  VAL_ARGS="--states 8 --samples 256 --rollout 20 --rollout-members 8 --steps 64"
  VAL_CPU_ARGS="--states 2 --samples 64 --rollout 10 --rollout-members 2 --steps 32"
fi

if [ "$TINY" = 1 ]; then
  PY=${PY:-.venv/bin/python}
else
  PY=python3
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}  # the carried wheels, installed below
fi

elapsed() { python3 -c "import time; print(int(time.time() - $T0))"; }
phase() {  # phase NAME command...: runs, logs, records seconds and exit code
  local name=$1; shift
  local s; s=$(date +%s.%N)
  echo "=== [$(elapsed) s] $name: $*"
  "$@"; local rc=$?
  local secs; secs=$(python3 -c "import time; print(f'{time.time() - $s:.2f}')")
  echo "$name $secs $rc" >>"$WORK/phases.txt"
  echo "=== [$(elapsed) s] $name done in $secs s (exit $rc)"
  return $rc
}
to_file() {  # to_file FILE command...: stdout also appended to FILE; the command's exit code
  local f=$1; shift
  "$@" | tee -a "$f"; return "${PIPESTATUS[0]}"
}

main() {
  # ---- 0. setup
  if [ "$TINY" = 1 ]; then
    GF=(.venv/bin/genfilter)
  else
    phase wheels python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/site .whl/*.whl || return 1
    if phase install python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . \
        && command -v genfilter >/dev/null; then
      GF=(genfilter)
    else
      echo "editable install failed: running the CLI from src/ (python3 -m genfilter.cli)"
      export PYTHONPATH=$PWD/src:$PYTHONPATH
      GF=(python3 -m genfilter.cli)
    fi
  fi
  export PYTHONUNBUFFERED=1
  (nvidia-smi || echo "no nvidia-smi") >"$OUT/nvidia-smi.txt" 2>&1
  head -20 "$OUT/nvidia-smi.txt"
  $PY - >"$WORK/env.json" <<'EOF' || return 1
import json, os, platform, torch, azula, genfilter
env = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
       "cuda_available": torch.cuda.is_available(), "python": platform.python_version(),
       "azula": getattr(azula, "__version__", "?"), "genfilter": genfilter.__version__,
       "cpu_count": os.cpu_count(), "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
       "matmul_precision": torch.get_float32_matmul_precision()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    env.update(gpu=p.name, gpu_memory_gib=p.total_memory / 2**30, sms=p.multi_processor_count)
print(json.dumps(env))
EOF
  cat "$WORK/env.json"; echo
  VAL_DEVICE=$DEVICE VAL_THREADS=1  # on a GPU the CPU only burns the states in: one thread
  if ! phase smoke $PY benchmarks/gpu_ns64_helpers.py smoke "$DEVICE" "$RES"; then
    echo "SMOKE FAILED on $DEVICE: the validation will run on the CPU, with fewer states"
    VAL_DEVICE=cpu VAL_ARGS=$VAL_CPU_ARGS VAL_THREADS=16
    $PY -c "import torch; assert torch.cuda.is_available() or '$DEVICE' == 'cpu'" || return 1
  fi

  # ---- 1. probe (no data needed; fails fast if training on the device is broken)
  phase probe $PY benchmarks/ns_gpu_step_probe.py --device "$DEVICE" --resolution "$RES" \
    $PROBE_ARGS --json "$OUT/probe.json" || return 1

  # ---- 2. data
  DATA=$WORK/data_ns$RES
  phase data $PY benchmarks/ns_data_device.py --out "$DATA" --resolution "$RES" \
    --trajectories "$TRAJ" --length "$LEN" $BURN --device "$DEVICE" \
    --budget-s "$DATA_BUDGET" --min-trajectories "$MIN_TRAJ" \
    --timings "$OUT/data_timings.json"
  if [ $? -ne 0 ]; then  # the same dataset code on the CPU cores, chunks in parallel
    [ "$DEVICE" != cpu ] || return 1
    echo "DATA ON $DEVICE FAILED: the default 64 trajectories on $(nproc) CPU processes"
    DATA=$WORK/data_ns${RES}_cpu
    phase data_cpu $PY benchmarks/ns_data_device.py --out "$DATA" --resolution "$RES" \
      --trajectories 64 --length "$LEN" $BURN --chunk 4 --workers "$(nproc)" \
      --timings "$OUT/data_timings.json" || return 1
  fi

  # ---- 3. train
  local left=$(( T_END_TRAIN - $(elapsed) ))
  EPOCHS=$($PY benchmarks/gpu_ns64_helpers.py epochs "$DATA" "$OUT/probe.json" "$BATCH" "$left" \
    "$MAX_EPOCHS" 2>"$WORK/epochs.json") || { cat "$WORK/epochs.json"; return 1; }
  cat "$WORK/epochs.json"
  echo "training budget $left s -> $EPOCHS epochs at batch $BATCH"
  CKPT=$WORK/ns2d_gpu.pt
  rm -f "$CKPT"
  # hard stop 60 s after the budget; checkpoints are written every epochs/10 epochs
  phase train timeout $(( left + 60 )) "${GF[@]}" train ns2d --device "$DEVICE" --data "$DATA" \
    --out "$CKPT" --epochs "$EPOCHS" --batch-size "$BATCH" --seed 0 --no-progress $QUICK
  [ -f "$CKPT" ] || return 1

  # ---- 4. ship
  phase ship $PY scripts/ship_checkpoint.py "$CKPT" "$OUT/ns2d_gpu_fp16.pt" --system ns2d \
    --note "scripts/gpu_ns64.sh on $DEVICE; docs/results/ns_gpu.md"
  phase export $PY benchmarks/gpu_ns64_helpers.py export "$CKPT" "$OUT/ns2d_gpu_ema_fp32.pt"
  $PY benchmarks/gpu_ns64_helpers.py summary "$OUT" "$WORK" >/dev/null  # in case validation dies

  # ---- 5. validate (the fp32 EMA weights of the training checkpoint)
  left=$(( T_HARD - $(elapsed) ))
  {
    echo "# genfilter --threads $VAL_THREADS validate $VAL_ARGS --device $VAL_DEVICE (scripts/gpu_ns64.sh)"
    echo
  } >"$OUT/validation.md"
  if ! phase validate to_file "$OUT/validation.md" timeout "$left" "${GF[@]}" --threads "$VAL_THREADS" \
      validate "$CKPT" --system ns2d $VAL_ARGS --device "$VAL_DEVICE" --no-progress; then
    left=$(( T_HARD - $(elapsed) ))
    if [ "$left" -gt 60 ] && [ "$VAL_DEVICE" != cpu ]; then
      echo "validation on $VAL_DEVICE failed: on the CPU with fewer states ($left s left)"
      {
        echo; echo "(the run above FAILED)"; echo
        echo "# genfilter --threads 16 validate $VAL_CPU_ARGS --device cpu"; echo
      } >>"$OUT/validation.md"
      phase validate_cpu to_file "$OUT/validation.md" timeout "$left" "${GF[@]}" --threads 16 \
        validate "$CKPT" --system ns2d $VAL_CPU_ARGS --device cpu --no-progress
    fi
  fi
  return 0
}

main 2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
echo "=== total $(elapsed) s, exit $rc" | tee -a "$OUT/log.txt"
PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} $PY benchmarks/gpu_ns64_helpers.py summary "$OUT" "$WORK" 2>&1 | tee -a "$OUT/log.txt"
ls -la "$OUT" | tee -a "$OUT/log.txt"
exit "$rc"
