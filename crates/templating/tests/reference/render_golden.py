#!/usr/bin/env python3
"""Regenerate tests/golden/<template>/<shape>.txt with Python jinja2, set up exactly as
transformers' apply_chat_template sets it up (ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, loopcontrols, json.dumps-based tojson, raise_exception,
strftime_now). The Rust renderer must match these files byte for byte
(tests/golden.rs).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install jinja2
    /tmp/venv/bin/python crates/templating/tests/reference/render_golden.py
"""
import json
import os
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHAPES = ["single_user", "system_user", "multi_turn", "generate", "tools_offered", "tool_call_history"]
# template file stem -> (bos_token, eos_token, shapes); the tokens are the GGUF files'.
# `probe` is not a model's template: it exercises tojson's options and Python methods.
TEMPLATES = {
    "smollm2": ("<|im_start|>", "<|im_end|>", SHAPES),
    "qwen2.5-coder": ("<|endoftext|>", "<|im_end|>", SHAPES),
    "probe": ("<s>", "</s>", ["probe"]),
}


def environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    env = environment()
    for name, (bos, eos, shapes) in TEMPLATES.items():
        with open(os.path.join(TESTS, "templates", f"{name}.jinja"), encoding="utf-8") as f:
            template = env.from_string(f.read())
        out_dir = os.path.join(TESTS, "golden", name)
        os.makedirs(out_dir, exist_ok=True)
        for shape in shapes:
            with open(os.path.join(TESTS, "conversations", f"{shape}.json"), encoding="utf-8") as f:
                conv = json.load(f)
            text = template.render(
                messages=conv["messages"],
                tools=conv.get("tools") or None,
                documents=None,
                add_generation_prompt=conv["add_generation_prompt"],
                bos_token=bos,
                eos_token=eos,
            )
            with open(os.path.join(out_dir, f"{shape}.txt"), "w", encoding="utf-8", newline="") as f:
                f.write(text)
            print(f"{name}/{shape}.txt: {len(text.encode())} bytes")


if __name__ == "__main__":
    main()
