#!/usr/bin/env python3
"""Record how llama.cpp tokenizes under each BPE pre-tokenizer wick knows.

For each `tokenizer.ggml.pre` value below, the tiny `llama` model (wick's generator,
`cargo run --release -p wick-engine --example tiny_gguf`, SmolLM2's BPE vocabulary and
merges) is rewritten with that value (gguf-py), loaded in llama.cpp's llama-server (the
`xllamacpp` wheel) and asked to tokenize the text set of
scripts/record_llamacpp_fixtures.py plus texts aimed at the splits that differ
(contractions in every case, letter-case runs, digit runs, slashes before newlines).
The ids (POST /tokenize, add_special false, parse_special true) go to
crates/engine/tests/fixtures/pretokenizers.json; `tokenizer_pretokenizers.rs` checks
wick's tokenizer against them with the same vocabulary and pre value.

Usage (after scripts/setup-bench-venv.sh, `pip install gguf`, scripts/fetch-models.sh):
  .venv-bench/bin/python scripts/record_pretokenizer_fixtures.py
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))
sys.path.insert(0, str(REPO / "scripts"))
from llamacpp_server import LlamaCppServer  # noqa: E402
from record_llamacpp_fixtures import TOKENIZER_TEXTS  # noqa: E402

PRES = ["default", "gpt-2", "gpt-4o", "llama-bpe", "qwen2", "smollm"]
EXTRA_TEXTS = [
    "I'M YOU'RE THEY'LL WE'VE SHE'D IT'S don't You'Re",
    "HTTPServer XMLHttpRequest iPhone McDonald's ÉCOLE élève ÀBC àbc Ωmega ωMEGA",
    "1 12 123 1234 12345 123456 1234567 3.14159265 10,000,000",
    "a/b/c\n/path/to/x/\r\n// comment\n!!!\n\n???\r\n",
    "don't stop-believing... (really?) [yes]; {no}: <maybe>",
    "tab\tseparated\tvalues\n  two spaces  \n   three",
]
OUT = REPO / "crates" / "engine" / "tests" / "fixtures" / "pretokenizers.json"


def with_pre(src: Path, dst: Path, pre: str) -> None:
    """Copy the GGUF at src to dst with tokenizer.ggml.pre set to pre."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "tokenizer.ggml.pre":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    writer.add_string("tokenizer.ggml.pre", pre)
    for t in reader.tensors:
        writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> int:
    vocab = REPO / "models-cache" / "smollm2-135m-instruct-q4_1.gguf"
    texts = TOKENIZER_TEXTS + EXTRA_TEXTS
    out = {
        "recorded_with": "scripts/record_pretokenizer_fixtures.py (llama.cpp's llama-server "
                         "from xllamacpp; POST /tokenize {content, add_special: false, "
                         "parse_special: true})",
        "vocabulary": vocab.name,
        "texts": texts,
        "pres": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "llama.gguf"
        subprocess.run(["cargo", "run", "--quiet", "--release", "-p", "wick-engine",
                        "--example", "tiny_gguf", "--", "llama", str(vocab), str(base)],
                       cwd=REPO, check=True)
        for pre in PRES:
            path = Path(tmp) / f"{pre}.gguf"
            with_pre(base, path, pre)
            srv = LlamaCppServer(path, n_ctx=512)
            try:
                out["pres"][pre] = [srv.tokenize(t, add_special=False) for t in texts]
            finally:
                srv.close()
            print(f"{pre}: {sum(map(len, out['pres'][pre]))} tokens", file=sys.stderr)
    OUT.write_text(json.dumps(out, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
