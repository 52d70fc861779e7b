#!/usr/bin/env python3
"""Record llama.cpp's reference for wick's tiny seeded models of every decoder family.

For each family of `wick_engine::tiny_models::FAMILIES` this script writes the tiny GGUF
with wick's own generator (`cargo run --release -p wick-engine --example tiny_gguf`),
loads it in llama.cpp's llama-server (embedded in the `xllamacpp` wheel, a child
process, 2 threads) and writes `crates/engine/tests/fixtures/families/<family>.json`:

  sha256            of the generated file (the Rust test regenerates and checks it)
  sequence          64 ordinary token ids, the same for every family
  top5              per position i: llama.cpp's 5 most probable next tokens after
                    sequence[0..=i], as [id, probability]
  greedy            32 greedy tokens after the whole sequence (top_k 1, ignore_eos),
                    with each step's top-2 [id, logprob] (to spot near ties)
  recorded_with     command, llama.cpp build, server parameters

A family llama.cpp refuses to load gets a fixture with "loaded": false and the error.

How llama.cpp is asked:
  * top5: for i = 0..63, POST /completion {prompt: sequence[0..=i] (token ids),
    n_predict: 1, n_probs: 5, temperature: 0, cache_prompt: true,
    post_sampling_probs: false, ignore_eos: true}. With the prompt cached, each request
    evaluates one new token, as wick's test feeds them. Without post_sampling_probs the
    server reports the softmax of the raw logits over the whole vocabulary (no sampler,
    no logit bias). ignore_eos: a predicted end-of-generation token would end the answer
    without probabilities. When the sampled token is an incomplete UTF-8 piece the
    server reports no probabilities either; the request is repeated with that token
    banned by logit_bias (the raw probabilities do not change).
  * llamacpp_noise_max_dp: the same 64 prefixes again, each evaluated as one batch
    (cache_prompt: false); the largest probability difference between the two ways is
    llama.cpp's own numerical noise on this file, the floor for any comparison.
  * llamacpp_plain_attention_max_dp: the same 64 one-token steps on a second server
    started with flash attention off (softmax of the scores in f32, then the values
    times it, summed in f32, the form the candle path computes); the largest
    probability difference from top5 is how far llama.cpp's own two CPU attention
    paths are apart on this file.
  * greedy: POST /completion {prompt: sequence, n_predict: 32, temperature: 0,
    top_k: 1, ignore_eos: true, n_probs: 2, return_tokens: true}. ignore_eos biases
    end-of-generation tokens away; their raw probabilities still show in top2.
  * n_ctx 2048 (one slot): above phi3's original context (256), so llama.cpp uses its
    rope_factors_long.

Usage (after scripts/setup-bench-venv.sh and scripts/fetch-models.sh):

  .venv-bench/bin/python scripts/record_family_fixtures.py [family ...]
      [--vocab models-cache/smollm2-135m-instruct-q4_1.gguf]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))
from llamacpp_server import LlamaCppServer  # noqa: E402  (benches/llamacpp_server.py)

FAMILIES = ["llama", "llama3", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "phi3",
            "granite", "olmo2", "gpt-oss"]
OUT_DIR = REPO / "crates" / "engine" / "tests" / "fixtures" / "families"
N_CTX = 2048
N_THREADS = 2
SEQ_LEN = 64
N_GREEDY = 32
N_PROBS = 5


def sequence() -> list[int]:
    """64 ordinary SmolLM2 token ids (well past the special tokens at the start), from a
    fixed linear congruential walk."""
    ids, x = [], 12345
    for _ in range(SEQ_LEN):
        x = (x * 1103515245 + 12345) % (1 << 31)
        ids.append(1000 + x % 40000)
    return ids


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def generate(family: str, vocab: Path, out: Path) -> None:
    cmd = ["cargo", "run", "--quiet", "--release", "-p", "wick-engine", "--example",
           "tiny_gguf", "--", family, str(vocab), str(out)]
    subprocess.run(cmd, cwd=REPO, check=True)


def prob_pairs(entries: list[dict]) -> list[list]:
    return [[t["id"], round(math.exp(t["logprob"]), 6)] for t in entries]


def top5_at(srv: LlamaCppServer, prefix: list[int], cache_prompt: bool) -> list[list]:
    """llama.cpp's top 5 next tokens after `prefix`, as [id, probability]."""
    banned: list[int] = []
    while True:
        r = srv.post("/completion", {
            "prompt": prefix,
            "n_predict": 1,
            "n_probs": N_PROBS,
            "temperature": 0,
            "cache_prompt": cache_prompt,
            "post_sampling_probs": False,
            "ignore_eos": True,
            "return_tokens": True,
            "logit_bias": [[t, False] for t in banned],
        })
        if "completion_probabilities" in r:
            return prob_pairs(r["completion_probabilities"][0]["top_logprobs"])
        # The sampled token is an incomplete UTF-8 piece: the server holds its text back
        # and reports nothing. Ban it from sampling and ask again; the reported
        # probabilities are of the raw logits, before any bias.
        if len(banned) >= 20:
            raise RuntimeError(f"no probabilities after {prefix[-3:]}: {json.dumps(r)[:500]}")
        banned += r["tokens"]


def max_prob_diff(a: list[list], b: list[list]) -> float:
    """Largest difference between two top-5 lists' probabilities of the same token."""
    d = 0.0
    for x, y in zip(a, b):
        py = dict((i, p) for i, p in y)
        d = max([d] + [abs(p - py[i]) for i, p in x if i in py])
    return round(d, 5)


def record(srv: LlamaCppServer, seq: list[int]) -> dict:
    # One token at a time (each request extends the cached prompt by one token), as
    # wick's test feeds it; then each prefix as one batch, only to measure how much
    # llama.cpp's own numbers move between the two ways (its noise floor).
    top5 = [top5_at(srv, seq[:i + 1], cache_prompt=True) for i in range(len(seq))]
    batch = [top5_at(srv, seq[:i + 1], cache_prompt=False) for i in range(len(seq))]
    r = srv.post("/completion", {
        "prompt": seq,
        "n_predict": N_GREEDY,
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
    assert len(gen) == N_GREEDY, (len(gen), r.get("stop_type"))
    top2 = [[[t["id"], round(t["logprob"], 5)] for t in c["top_logprobs"]]
            for c in r["completion_probabilities"]]
    return {"top5": top5, "greedy": gen, "greedy_top2_logprobs": top2,
            "llamacpp_noise_max_dp": max_prob_diff(top5, batch)}


def margins(top5: list[list]) -> dict:
    """Top-2 margins (nats) over the positions: how peaked the model is."""
    m = sorted(math.log(p[0][1]) - math.log(p[1][1]) for p in top5)
    return {"min": round(m[0], 3), "median": round(m[len(m) // 2], 3),
            "max": round(m[-1], 3), "below_0.05": sum(1 for v in m if v < 0.05),
            "top1_prob_median": round(sorted(p[0][1] for p in top5)[len(top5) // 2], 3)}


def dump(value, indent: int = 0) -> str:
    """One key per line; lists of numbers and short lists on one line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {dump(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and isinstance(value[0], list):
        items = [inner + json.dumps(v, separators=(", ", ": ")) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, separators=(", ", ": "))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("families", nargs="*", default=FAMILIES)
    ap.add_argument("--vocab", type=Path,
                    default=Path(os.environ.get("WICK_MODEL_CACHE", REPO / "models-cache"))
                    / "smollm2-135m-instruct-q4_1.gguf")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    seq = sequence()
    argv = [".venv-bench/bin/python", "scripts/record_family_fixtures.py"] + sys.argv[1:]
    status = 0
    with tempfile.TemporaryDirectory(prefix="wick-tiny-") as tmp:
        for family in args.families:
            path = Path(tmp) / f"{family}.gguf"
            generate(family, args.vocab, path)
            sha = sha256_file(path)
            fixture = {"family": family, "file": f"{family}.gguf", "sha256": sha}
            try:
                srv = LlamaCppServer(path, n_ctx=N_CTX, n_parallel=1, threads=N_THREADS,
                                     verbosity=1)
            except RuntimeError as e:
                print(f"{family}: llama.cpp refused the file:\n{e}", file=sys.stderr)
                fixture.update({"loaded": False, "error": str(e)[-4000:]})
                status = 1
            else:
                try:
                    fixture["recorded_with"] = {
                        "command": shlex.join(argv),
                        "engine": f"llama.cpp llama-server via {srv.version}",
                        "llama_cpp_build": srv.build_info,
                        "server_params": {"n_ctx": N_CTX, "n_parallel": 1,
                                          "n_threads": N_THREADS,
                                          "n_threads_batch": N_THREADS},
                        "top5": "POST /completion {prompt: sequence[..=i], n_predict: 1, "
                                "n_probs: 5, temperature: 0, cache_prompt: true, "
                                "post_sampling_probs: false, ignore_eos: true} for i in "
                                "0..64 in order (one new token evaluated per request): "
                                "softmax of the raw logits",
                        "llamacpp_noise_max_dp": "largest |dp| between top5 and the same "
                                                 "prefixes evaluated as one batch each "
                                                 "(cache_prompt: false)",
                        "llamacpp_plain_attention_max_dp": "largest |dp| between top5 and "
                                                           "the same steps with flash "
                                                           "attention off",
                        "greedy": "POST /completion {prompt: sequence, n_predict: 32, "
                                  "temperature: 0, top_k: 1, ignore_eos: true, n_probs: 2}",
                    }
                    fixture["loaded"] = True
                    fixture["sequence"] = seq
                    fixture.update(record(srv, seq))
                    fixture["margins"] = margins(fixture["top5"])
                    plain = LlamaCppServer(path, n_ctx=N_CTX, n_parallel=1,
                                           threads=N_THREADS, flash_attn=False)
                    try:
                        other = [top5_at(plain, seq[:i + 1], cache_prompt=True)
                                 for i in range(len(seq))]
                    finally:
                        plain.close()
                    fixture["llamacpp_plain_attention_max_dp"] = max_prob_diff(
                        fixture["top5"], other)
                    print(f"{family}: {sha[:12]} margins {fixture['margins']}",
                          file=sys.stderr)
                    if os.environ.get("WICK_SHOW_LLAMACPP_INFO") and srv.log_path:
                        for line in srv.log_path.read_text(errors="replace").splitlines():
                            if "print_info" in line or "swa" in line.lower():
                                print(f"  {family}| {line}", file=sys.stderr)
                finally:
                    srv.close()
            target = args.out_dir / f"{family}.json"
            target.write_text(dump(fixture) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
