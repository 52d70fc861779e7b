#!/usr/bin/env python3
"""Train a tiny SentencePiece model and record what llama.cpp's converter reads from it.

Writes assets/fixtures/sentencepiece_tiny.model (a real `tokenizer.model`, trained by
Google's `sentencepiece` with byte fallback, control and user-defined symbols) and
assets/fixtures/sentencepiece_tiny.json: for every id, the piece, its score and the
GGUF token type the converter derives (`_create_vocab_sentencepiece`: unknown,
control, unused, byte, else normal). wick's reader of `tokenizer.model` is checked
against it (crates/engine/tests/convert_decoder.rs).

Usage: .venv-bench/bin/pip install sentencepiece
       .venv-bench/bin/python scripts/record_sentencepiece_fixture.py
"""
import json
import os
import tempfile

import sentencepiece as spm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "assets", "fixtures")
TEXT = (
    "The capital of France is Paris. def fib(n): return n if n < 2 else fib(n-1)\n"
    "Héllo, 世界! Ünïcödé text with    runs of spaces and digits 12345 67890.\n"
    "SentencePiece trains a BPE model from raw sentences.\n"
) * 40


def main():
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write(TEXT)
        prefix = os.path.join(tmp, "tiny")
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=prefix, vocab_size=340, model_type="bpe",
            byte_fallback=True, character_coverage=1.0,
            normalization_rule_name="identity",
            user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
            control_symbols=["<mask>"], pad_id=0, eos_id=1, bos_id=2, unk_id=3,
            minloglevel=2,
        )
        with open(prefix + ".model", "rb") as f:
            model = f.read()
    sp = spm.SentencePieceProcessor(model_proto=model)
    pieces = []
    for i in range(sp.vocab_size()):
        kind = 1
        if sp.IsUnknown(i):
            kind = 2
        elif sp.IsControl(i):
            kind = 3
        elif sp.IsUnused(i):
            kind = 5
        elif sp.IsByte(i):
            kind = 6
        pieces.append([sp.IdToPiece(i), sp.GetScore(i), kind])
    with open(os.path.join(OUT, "sentencepiece_tiny.model"), "wb") as f:
        f.write(model)
    with open(os.path.join(OUT, "sentencepiece_tiny.json"), "w", encoding="utf-8") as f:
        json.dump({"sentencepiece": spm.__version__, "pieces": pieces}, f, ensure_ascii=False)
        f.write("\n")
    print(f"{len(pieces)} pieces, {len(model)} bytes")


if __name__ == "__main__":
    main()
