#!/usr/bin/env bash
# Coverage-guided fuzzing of wick's parsers with cargo-fuzz (libFuzzer, nightly).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target (default: all of them) for SECONDS (default 600) at the lowest CPU
# priority, one fuzzer process at a time, on a corpus under fuzz/corpus/<target>
# seeded from fuzz/seeds/<target>. Prints executions, exec/s, coverage, corpus size
# and crashes per target; crashing inputs land in fuzz/artifacts/<target>/. Exits
# non-zero if any target crashed, hung or ran out of memory.
#
# Environment: FUZZ_TIMEOUT (seconds one input may take, default 30),
# FUZZ_RSS_MB (memory limit, default 2048), FUZZ_ARGS (more libFuzzer flags).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FUZZ="$ROOT/fuzz"
ALL_TARGETS=(model_name modelfile options tool_calls go_template jinja_template gguf_reader request_bodies)

SECONDS_PER_TARGET="${1:-600}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL_TARGETS[@]}")

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: a nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FUZZ/target}"
cd "$FUZZ"
for t in "${TARGETS[@]}"; do
    [ -f "fuzz_targets/$t.rs" ] || { echo "fuzz.sh: no target '$t'" >&2; exit 2; }
done
echo "fuzz.sh: building ${TARGETS[*]}"
for t in "${TARGETS[@]}"; do
    nice -n 19 cargo +nightly fuzz build -O "$t"
done

TRIPLE="$(rustc +nightly -vV | sed -n 's/^host: //p')"
BIN_DIR="$CARGO_TARGET_DIR/$TRIPLE/release"
mkdir -p "$FUZZ/logs"
failed=()
summary=()
for t in "${TARGETS[@]}"; do
    corpus="$FUZZ/corpus/$t"
    artifacts="$FUZZ/artifacts/$t"
    log="$FUZZ/logs/$t.log"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "$FUZZ/seeds/$t" ]; then
        cp -n "$FUZZ/seeds/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    dict=()
    [ -f "$FUZZ/dicts/$t.dict" ] && dict=("-dict=$FUZZ/dicts/$t.dict")
    before=$(find "$artifacts" -type f \( -name "crash-*" -o -name "oom-*" -o -name "timeout-*" -o -name "leak-*" \) | wc -l)
    echo "fuzz.sh: $t for ${SECONDS_PER_TARGET}s (log: ${log#"$ROOT"/})"
    status=0
    # shellcheck disable=SC2086
    nice -n 19 "$BIN_DIR/$t" "$corpus" "${dict[@]}" \
        -max_total_time="$SECONDS_PER_TARGET" \
        -timeout="${FUZZ_TIMEOUT:-30}" \
        -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
        -artifact_prefix="$artifacts/" \
        -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
    after=$(find "$artifacts" -type f \( -name "crash-*" -o -name "oom-*" -o -name "timeout-*" -o -name "leak-*" \) | wc -l)
    crashes=$((after - before))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    files=$(find "$corpus" -type f | wc -l)
    line=$(printf '%-15s %6ss  execs %-10s exec/s %-7s cov %-6s ft %-6s corpus %-6s crashes %s' \
        "$t" "$SECONDS_PER_TARGET" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$files" "$crashes")
    if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        failed+=("$t")
        line="$line  FAILED (exit $status; see ${log#"$ROOT"/}, ${artifacts#"$ROOT"/})"
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "fuzz.sh summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz.sh: crashes in ${failed[*]}" >&2
    exit 1
fi
