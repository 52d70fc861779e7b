"""GPU benchmark: wick's cuda build on synthetic llama-shaped Q4_K models (1B, 8B).

Run by benches/gpu.sh, which builds the binary and writes the models. For each model:
spawn `wick serve` (benches/wick_server.py) on a temporary store, import the GGUF,
then

  single stream  one request at a time, a ~512-token prompt and 128 generated tokens,
                 median of 3 runs after a warm-up (single_stream.py's WickBench):
                 prefill and decode tokens/s from Ollama's timing fields;
  load           N concurrent streaming clients, N in --clients (load.py's clients and
                 prompts): aggregate tokens/s, decode tokens/s while all N generate,
                 TTFT and ITL percentiles.

and print one markdown table. The weights are random, so a sequence can meet its end
of sequence early; the tokens column says how many were generated.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import Run, bench_wick as load_bench, ms, parse_clients  # noqa: E402
from single_stream import PARAGRAPH, WickBench, marker  # noqa: E402

SINGLE_RUNS = 3
PROMPT_WORDS = 380  # about 512 tokens of PARAGRAPH in a llama-style BPE


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def long_prompt() -> str:
    words = PARAGRAPH.split()
    return " ".join((words * (PROMPT_WORDS // len(words) + 1))[:PROMPT_WORDS])


def single_stream(wick: WickBench, name: str, n_predict: int) -> dict:
    prompt = long_prompt()
    wick.run(name, marker(0) + prompt, n_predict)  # warm-up: loads the model
    samples = [wick.run(name, marker(i) + prompt, n_predict) for i in range(1, SINGLE_RUNS + 1)]
    return {
        "prompt_tokens": samples[0].prompt_tokens,
        "prefill": statistics.median(s.prefill_tps for s in samples),
        "decode": statistics.median(s.decode_tps for s in samples),
    }


def table(rows: list[tuple[str, dict | None, str | None, list[Run]]]) -> str:
    out = ["| model | prefill tok/s (1 stream) | decode tok/s (1 stream) | clients | "
           "aggregate tok/s | decode tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | "
           "ITL p99 ms | tokens |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model, single, error, runs in rows:
        pre = f"{single['prefill']:.0f} ({single['prompt_tokens']} tok)" if single else "-"
        dec = f"{single['decode']:.1f}" if single else "-"
        if error:
            out.append(f"| {model} | error: {error[:100]} | | | | | | | | | |")
        for r in runs:
            if r.error:
                out.append(f"| {model} | {pre} | {dec} | {r.n} | error: {r.error[:80]} "
                           "| | | | | | |")
                continue
            d = r.decode_tps
            out.append(f"| {model} | {pre} | {dec} | {r.n} | {r.tps:.1f} | "
                       f"{'-' if d is None else f'{d:.1f}'} | {ms(r.ttft(50))} | "
                       f"{ms(r.ttft(99))} | {ms(r.itl(50))} | {ms(r.itl(99))} | "
                       f"{r.tokens}/{r.n * r.num_predict} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wick-bin", type=Path, required=True)
    ap.add_argument("--model", action="append", required=True, metavar="NAME=GGUF",
                    help="a model to import and measure (repeatable)")
    ap.add_argument("--clients", type=parse_clients, default=[1, 8, 32, 64])
    ap.add_argument("--num-predict", type=int, default=128)
    args = ap.parse_args()

    rows = []
    parallel = str(max(args.clients))
    for spec in args.model:
        name, _, path = spec.partition("=")
        tag = f"{name}:bench"
        log(f"[{name}] starting wick on {path}")
        wick = WickBench(None, args.wick_bin, temp_store=True, ready_timeout=300,
                         env={"OLLAMA_NUM_PARALLEL": parallel, "OLLAMA_KEEP_ALIVE": "-1"})
        single, error, runs = None, None, []
        try:
            wick.import_gguf(tag, Path(path))
            single = single_stream(wick, tag, args.num_predict)
            log(f"[{name}] single stream: {single}")
            runs = load_bench(wick, name, tag, Path(path), args.clients, args.num_predict, None)
        except Exception as e:  # noqa: BLE001 - reported in the table, the next model runs
            error = f"{type(e).__name__}: {e}"
            log(f"[{name}] ERROR {error}\n{wick.log_tail()}")
        finally:
            wick.close()
        rows.append((name, single, error, runs))
    print(table(rows))
    failed = any(e for _, _, e, _ in rows) or any(r.error for *_, rs in rows for r in rs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
