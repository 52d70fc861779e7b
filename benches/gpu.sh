#!/usr/bin/env bash
# GPU benchmark, unattended: on a CUDA host, build wick with `--features cuda`, write
# synthetic llama-shaped Q4_K models (1B and 8B shapes, random weights, made by wick's
# own GGUF writer: no download), serve each and print one table of single-stream
# prefill/decode tokens/s and aggregate tokens/s at 1, 8, 32 and 64 concurrent clients
# with TTFT and ITL percentiles (benches/gpu.py, on load.py's and single_stream.py's
# machinery). About 10 minutes on one GPU once built; models are cached.
#
# Usage: benches/gpu.sh [--shapes llama-1b,llama-8b] [--clients 1,8,32,64]
#                       [--num-predict 128]
#   env: WICK_GPU_BENCH_CACHE  where the synthetic models go (default models-cache/gpu-bench)
#        WICK_BENCH_VENV       Python venv with `requests` (default .venv-bench; made if missing)
#        WICK_NVIDIA_SMI       the nvidia-smi to ask for GPUs (default: nvidia-smi on PATH)
#        CUDA_COMPUTE_CAP      GPU generation to compile for (default: what nvidia-smi says)
# Exit codes: 0 measured; 1 a step failed; 2 no GPU found (nothing was measured; the
# script says so and what it would have run).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHAPES="llama-1b,llama-8b"
CLIENTS="1,8,32,64"
NUM_PREDICT=128
CACHE="${WICK_GPU_BENCH_CACHE:-$REPO/models-cache/gpu-bench}"
VENV="${WICK_BENCH_VENV:-$REPO/.venv-bench}"
SMI="${WICK_NVIDIA_SMI:-nvidia-smi}"
TARGET="$REPO/target/cuda"
VOCAB="$REPO/models-cache/smollm2-135m-instruct-q4_1.gguf"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --shapes) SHAPES="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --num-predict) NUM_PREDICT="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument: $1" >&2; exit 1 ;;
  esac
done

log() { echo "gpu.sh: $*" >&2; }

plan() {
  log "on a CUDA host it would:"
  log "  1. cargo build --release --features cuda --bin wick (target dir $TARGET)"
  log "  2. write the synthetic models $SHAPES into $CACHE (vocabulary from $VOCAB)"
  log "  3. serve each and measure single stream + $CLIENTS clients, $NUM_PREDICT tokens each"
}

# --- a GPU? ----------------------------------------------------------------------------
gpus=0
if command -v "$SMI" >/dev/null 2>&1; then
  gpus="$("$SMI" -L 2>/dev/null | grep -c '^GPU ' || true)"
fi
if [[ "$gpus" -eq 0 ]]; then
  log "no GPU found ($SMI is absent or lists no device): nothing built, nothing measured"
  plan
  exit 2
fi
"$SMI" --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader >&2
if [[ -z "${CUDA_COMPUTE_CAP:-}" ]]; then
  CUDA_COMPUTE_CAP="$("$SMI" --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')"
  export CUDA_COMPUTE_CAP
fi
plan

# --- build ----------------------------------------------------------------------------
cd "$REPO"
CARGO_TARGET_DIR="$TARGET" cargo build --release --features cuda --bin wick
cargo build --release -p wick-engine --example shaped_gguf

# --- models ---------------------------------------------------------------------------
[[ -f "$VOCAB" ]] || bash scripts/fetch-models.sh
mkdir -p "$CACHE"
models=()
IFS=, read -r -a shapes <<<"$SHAPES"
for shape in "${shapes[@]}"; do
  out="$CACHE/$shape-q4k.gguf"
  if [[ ! -s "$out" ]]; then
    target/release/examples/shaped_gguf "$shape" "$VOCAB" "$out.partial"
    mv "$out.partial" "$out"
  fi
  models+=(--model "$shape=$out")
done

# --- measure --------------------------------------------------------------------------
if ! "$VENV/bin/python" -c 'import requests' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check requests
fi
"$VENV/bin/python" benches/gpu.py --wick-bin "$TARGET/release/wick" "${models[@]}" \
  --clients "$CLIENTS" --num-predict "$NUM_PREDICT"
