#!/usr/bin/env bash
# The GPU check, in one call on a bare GPU machine (see README "GPU check"):
#   OUT=/some/dir bash tools/gpu_check.sh [path/to/mamba_ssm-*.tar.gz]
# installs pointmap without dependencies, builds mamba-ssm from the given source package for sm_90 only
# (optional), compiles pointmap's CUDA ops, runs the GPU-marked tests (among them the Triton selective
# scan compiled for the GPU, against the float64 reference) and the benchmarks (ops; selective_scan on
# every backend: Triton vs PyTorch vs mamba-ssm, fp32 and bf16 inputs; the pretraining step fp32 / bf16 /
# compiled with each scan backend), and leaves env.txt, tests.txt, bench_ops.json, bench_scan.json,
# bench_step.json and their printed tables in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/pointmap_gpu}
mkdir -p "$OUT"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16}
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$OUT/log.txt"; }

log "install pointmap (no dependencies)"
pip install -q --no-deps --no-build-isolation -e . >>"$OUT/log.txt" 2>&1 || log "pip install -e . failed"

if [ "${1:-}" != "" ] && [ -f "$1" ]; then
  log "build mamba-ssm from $1 for sm_90"
  work=$(mktemp -d)
  tar -xzf "$1" -C "$work"
  src=$(find "$work" -maxdepth 1 -mindepth 1 -type d | head -n 1)
  # keep only sm_90 in its setup.py (it lists every architecture)
  sed -i -E 's/"-gencode", *"arch=compute_[0-9]+a?,code=sm_[0-9]+a?",?//; s/-gencode arch=compute_[0-9]+a?,code=sm_[0-9]+a?//' "$src/setup.py" || true
  ( cd "$src" && MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=FALSE \
      pip install -q --no-build-isolation --no-deps . ) >>"$OUT/mamba_build.txt" 2>&1 \
    && log "mamba-ssm built" || log "mamba-ssm build failed (see mamba_build.txt)"
fi

log "compile pointmap's CUDA ops"
python -c "from pointmap.ops import _ext; m = _ext.get(); print('compiled:', m is not None and hasattr(m, 'fps_cuda'), _ext.error())" \
  >>"$OUT/log.txt" 2>&1
python -m pointmap.env | tee "$OUT/env.txt"

unset TRITON_INTERPRET  # the Triton kernels must run compiled here, not interpreted
python -c "import triton; print('triton', triton.__version__)" >>"$OUT/log.txt" 2>&1 || log "triton does not import"

log "GPU tests"
python -m pytest -q -m gpu -rs --durations=10 2>&1 | tee "$OUT/tests.txt" | tail -n 5

log "benchmarks"
python tools/benchmark.py --ops --json "$OUT/bench_ops.json" 2>&1 | tee "$OUT/bench_ops.txt"
python tools/benchmark.py --scan --json "$OUT/bench_scan.json" 2>&1 | tee "$OUT/bench_scan.txt"
python tools/benchmark.py --step --json "$OUT/bench_step.json" 2>&1 | tee "$OUT/bench_step.txt"
log "done"
