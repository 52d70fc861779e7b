#!/usr/bin/env bash
# A checked CUDA build on a machine without a GPU or a system CUDA toolkit.
#
# Installs the CUDA 13 compiler pieces from their PyPI wheels into a cached folder
# (nvcc, the NVVM back end of the SAME version, the C runtime headers, cudart and
# CCCL; the `-cu12` nvcc wheel ships no nvcc), points CUDA_HOME, PATH and
# CUDA_COMPUTE_CAP at them and runs
#     cargo check --workspace --all-targets --features cuda,wick-engine/cuda
# in its own target dir. The build scripts compile candle's kernels with nvcc (PTX and
# the quantized-matmul static library): about 10+ minutes on 2 cores the first time.
#
# Usage: scripts/check-cuda.sh [--link]
#   --link   afterwards also link `target/cuda-check/release/wick` against STUB
#            libraries (libcuda, libnvrtc, libcurand, libcublas, libcublasLt) whose every
#            function returns an error. LINK CHECK ONLY, NEVER SHIP that binary: the
#            real libcuda.so comes with the NVIDIA driver, the others with the toolkit.
#   env: WICK_CUDA_CACHE   toolkit cache (default ~/.cache/wick-cuda)
#        WICK_CUDA_TARGET  cargo target dir (default <repo>/target/cuda-check)
#        CUDA_COMPUTE_CAP  compute capability to build for (default 90: Hopper)
# Exit codes: 0 checked (and linked), 1 a step failed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
# One CUDA release for every wheel: nvcc refuses an NVVM of another minor version, and
# cudarc 0.19 knows toolkits up to 13.4 (CCCL's wheels stop following at 13.2).
CUDA_VERSION=13.2.86
CACHE="${WICK_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wick-cuda}"
TOOLKIT="$CACHE/$CUDA_VERSION"
TARGET="${WICK_CUDA_TARGET:-$REPO/target/cuda-check}"
LINK=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --link) LINK=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "check-cuda: unknown argument: $1" >&2; exit 1 ;;
  esac
done

log() { echo "check-cuda: $*" >&2; }
die() { echo "check-cuda: ERROR: $*" >&2; exit 1; }

# --- the toolkit, from wheels -------------------------------------------------------
install_toolkit() {
  local staging="$TOOLKIT.partial"
  rm -rf "$staging"
  mkdir -p "$staging"
  log "installing CUDA $CUDA_VERSION wheels into $TOOLKIT"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --target "$staging/site" \
    "nvidia-cuda-nvcc==$CUDA_VERSION" "nvidia-nvvm==$CUDA_VERSION" \
    "nvidia-cuda-crt==$CUDA_VERSION" "nvidia-cuda-runtime==$CUDA_VERSION" \
    "nvidia-cuda-cccl==$CUDA_VERSION"
  local home="$staging/site/nvidia/cu13"
  [[ -x "$home/bin/nvcc" ]] || die "the nvcc wheel has no bin/nvcc under nvidia/cu13"
  [[ -x "$home/nvvm/bin/cicc" ]] || die "the nvvm wheel has no nvvm/bin/cicc"
  [[ -f "$home/include/cuda.h" && -d "$home/include/cccl" ]] || die "headers missing"
  # The wheels lay out a toolkit as nvcc.profile expects (bin/, nvvm/, include/,
  # include/cccl, lib/); only the linker's unversioned cudart name is missing.
  ln -sf libcudart.so.13 "$home/lib/libcudart.so"
  ln -sfn site/nvidia/cu13 "$staging/cuda"
  rm -rf "$TOOLKIT"
  mv "$staging" "$TOOLKIT"
  touch "$TOOLKIT/.complete"
}

[[ -f "$TOOLKIT/.complete" ]] || install_toolkit
export CUDA_HOME="$TOOLKIT/cuda"
export CUDA_PATH="$CUDA_HOME"
export PATH="$CUDA_HOME/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export LD_LIBRARY_PATH="$CUDA_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvcc --version | grep -q "release ${CUDA_VERSION%.*}," || die "nvcc is not CUDA ${CUDA_VERSION%.*}"
log "CUDA_HOME=$CUDA_HOME, compute capability $CUDA_COMPUTE_CAP, target dir $TARGET"

# --- the check --------------------------------------------------------------------
cd "$REPO"
started=$SECONDS
CARGO_TARGET_DIR="$TARGET" cargo check --workspace --all-targets \
  --features cuda,wick-engine/cuda
log "cargo check --features cuda: ok in $((SECONDS - started)) s"

[[ "$LINK" == 1 ]] || exit 0

# --- link check against stub libraries -----------------------------------------------
# Every function the binary may call in libcuda (all `cu*` functions cuda.h declares,
# after its `_v2` renames) and in the libraries cudarc links (the functions its
# bindings declare) becomes `int f(void) { return 34; }` (CUDA_ERROR_STUB_LIBRARY).
STUBS="$TARGET/link-stubs-NEVER-SHIP"
mkdir -p "$STUBS"
cudarc_src="$(CARGO_TARGET_DIR="$TARGET" cargo metadata --format-version 1 --features cuda \
  | "$PYTHON" -c 'import json,sys,os
m=json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))')"
stub_lib() { # name, file with one symbol a line
  local name="$1" symbols="$2"
  {
    echo "/* STUB $name: link check only, never ship. Every function fails. */"
    sort -u "$symbols" | sed 's/.*/int &(void) { return 34; }/'
  } >"$STUBS/$name.c"
  gcc -shared -fPIC -o "$STUBS/lib$name.so" -Wl,-soname,"lib$name.so" "$STUBS/$name.c"
  log "stub lib$name.so: $(sort -u "$symbols" | wc -l) functions"
}
# Both spellings: the header renames most functions to their `_v2` versions unless
# __CUDA_API_VERSION_INTERNAL is defined.
for internal in "" -D__CUDA_API_VERSION_INTERNAL; do
  gcc -E -P $internal -I"$CUDA_HOME/include" "$CUDA_HOME/include/cuda.h" \
    | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' ('
done >"$STUBS/cuda.syms"
grep -ohE '^pub unsafe fn cu[A-Z][A-Za-z0-9_]*' "$cudarc_src/src/driver/sys/mod.rs" \
  | sed 's/^pub unsafe fn //' >>"$STUBS/cuda.syms"
stub_lib cuda "$STUBS/cuda.syms"
for pair in nvrtc:nvrtc curand:curand cublas:cublas cublasLt:cublaslt; do
  lib="${pair%%:*}" dir="${pair#*:}"
  grep -ohE '^pub unsafe fn [A-Za-z_][A-Za-z0-9_]*' "$cudarc_src/src/$dir/sys/mod.rs" \
    | sed 's/^pub unsafe fn //' >"$STUBS/$lib.syms"
  stub_lib "$lib" "$STUBS/$lib.syms"
done
started=$SECONDS
CARGO_TARGET_DIR="$TARGET" RUSTFLAGS="-L native=$STUBS" \
  cargo build --release --bin wick --features cuda
log "LINK CHECK ONLY, NEVER SHIP: $TARGET/release/wick linked against $STUBS in $((SECONDS - started)) s"
