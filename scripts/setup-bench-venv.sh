#!/usr/bin/env bash
# Create <repo>/.venv-bench with xllamacpp (llama.cpp's llama-server embedded in
# a prebuilt CPU wheel), requests and the ollama client (embed.py), for benches/*.py (single_stream.py, load.py,
# the shared helpers llamacpp_server.py and wick_server.py) and
# scripts/record_llamacpp_fixtures.py. Idempotent: reuses an existing venv and
# only installs what is missing. The load benchmark's clients use only the standard
# library (threads + http.client).
#
# Usage: scripts/setup-bench-venv.sh [--check MODEL.gguf]
#   --check MODEL.gguf  also start llama-server on MODEL in a child process (as the
#                       benchmarks do), tokenize a word and print its peak RSS
#   env: WICK_BENCH_VENV overrides the venv path.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WICK_BENCH_VENV:-$REPO/.venv-bench}"
PYTHON="${PYTHON:-python3}"
CHECK_MODEL=""

while [[ $# -gt 0 ]]; do
  case "$1" in
    --check) CHECK_MODEL="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "setup-bench-venv: unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup-bench-venv: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi

if ! "$VENV/bin/python" -c 'import xllamacpp, requests, ollama' 2>/dev/null; then
  echo "setup-bench-venv: installing xllamacpp, requests and ollama" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --only-binary=xllamacpp xllamacpp requests 'ollama==0.6.3'
fi

"$VENV/bin/python" - "$REPO/benches" <<'PY'
import importlib.metadata as md
import sys
import xllamacpp, requests
p = xllamacpp.CommonParams()
for attr in ("model", "n_ctx", "cpuparams", "cpuparams_batch", "n_parallel",
             "cont_batching", "n_threads_http"):
    assert hasattr(p, attr), f"xllamacpp.CommonParams lacks {attr}"
sys.path.insert(0, sys.argv[1])
import llamacpp_server, wick_server  # noqa: F401  (the benches' shared helpers import)
print(f"setup-bench-venv: xllamacpp {md.version('xllamacpp')}, requests {requests.__version__}: ok")
PY

if [[ -n "$CHECK_MODEL" ]]; then
  "$VENV/bin/python" - "$REPO/benches" "$CHECK_MODEL" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from llamacpp_server import LlamaCppServer, fmt_mib
with LlamaCppServer(sys.argv[2], n_ctx=512) as s:
    ids = s.tokenize("Hello world")
    print(f"setup-bench-venv: llama-server at {s.base} (pid {s.pid}) tokenized "
          f"'Hello world' -> {ids}, peak RSS {fmt_mib(s.peak_rss_kb())}")
PY
fi

echo "$VENV"
