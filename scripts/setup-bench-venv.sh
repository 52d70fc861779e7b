#!/usr/bin/env bash
# Create <repo>/.venv-bench with xllamacpp (llama.cpp's llama-server embedded in
# a prebuilt CPU wheel) and requests, for benches/*.py and
# scripts/record_llamacpp_fixtures.py. Idempotent: reuses an existing venv and
# only installs what is missing.
#
# Usage: scripts/setup-bench-venv.sh [--check MODEL.gguf]
#   --check MODEL.gguf  also start an xllamacpp server on MODEL and tokenize a word
#   env: WICK_BENCH_VENV overrides the venv path.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WICK_BENCH_VENV:-$REPO/.venv-bench}"
PYTHON="${PYTHON:-python3}"
CHECK_MODEL=""

while [[ $# -gt 0 ]]; do
  case "$1" in
    --check) CHECK_MODEL="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup-bench-venv: unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup-bench-venv: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi

if ! "$VENV/bin/python" -c 'import xllamacpp, requests' 2>/dev/null; then
  echo "setup-bench-venv: installing xllamacpp and requests" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --only-binary=xllamacpp xllamacpp requests
fi

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import xllamacpp, requests
p = xllamacpp.CommonParams()
for attr in ("model", "n_ctx", "cpuparams"):
    assert hasattr(p, attr), f"xllamacpp.CommonParams lacks {attr}"
print(f"setup-bench-venv: xllamacpp {md.version('xllamacpp')}, requests {requests.__version__}: ok")
PY

if [[ -n "$CHECK_MODEL" ]]; then
  "$VENV/bin/python" - "$CHECK_MODEL" <<'PY'
import sys, requests, xllamacpp
p = xllamacpp.CommonParams()
p.model.path = sys.argv[1]
p.n_ctx = 512
p.cpuparams.n_threads = 2
s = xllamacpp.Server(p)
base = s.listening_address
if not base.startswith("http"):
    base = "http://" + base
r = requests.post(base + "/tokenize", json={"content": "Hello world"}, timeout=60)
r.raise_for_status()
print(f"setup-bench-venv: llama-server at {base} tokenized 'Hello world' -> {r.json()['tokens']}")
PY
fi

echo "$VENV"
