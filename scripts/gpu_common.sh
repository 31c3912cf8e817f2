# Shared by the one-call GPU scripts (scripts/gpu_ns_filter.sh, scripts/gpu_multiprocess.sh);
# source it after setting OUT and TINY (1: a CPU rehearsal with the local .venv).
mkdir -p "$OUT"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }

# On the device machine: the carried pure-Python wheels (.whl/) and the package source on
# PYTHONPATH; then the GPU and the versions, in the log.
gpu_setup() {
  if [ "$TINY" != 1 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || return 1
    export PYTHONPATH=/tmp/site:$PWD/src
  fi
  export PYTHONUNBUFFERED=1
  (nvidia-smi || echo "no nvidia-smi") >"$OUT/nvidia-smi.txt" 2>&1
  $PY -c "import torch, genfilter; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'genfilter', genfilter.__version__)"
}

# After `main 2>&1 | tee "$OUT/log.txt"`: the run files as one archive, the total time and
# what $OUT holds, in the log; exits with main's status.
gpu_finish() {
  local rc=$1
  tar czf "$OUT/runs.tgz" -C "$OUT" runs && rm -rf "$OUT/runs"
  echo "=== total $(elapsed) s, exit $rc" | tee -a "$OUT/log.txt"
  ls -la "$OUT" | tee -a "$OUT/log.txt"
  exit "$rc"
}
