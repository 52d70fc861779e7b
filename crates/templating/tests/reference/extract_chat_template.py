#!/usr/bin/env python3
"""Print (or write) the `tokenizer.chat_template` string of a GGUF file, byte for byte.

    python3 extract_chat_template.py MODEL.gguf [OUT.jinja]

Needs `pip install gguf` (use a throwaway venv).
"""
import sys

from gguf import GGUFReader


def chat_template(path: str) -> str:
    field = GGUFReader(path).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


if __name__ == "__main__":
    text = chat_template(sys.argv[1])
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w", encoding="utf-8", newline="") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
