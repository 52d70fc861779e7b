"""Structured outputs, tool calls, thinking and log probabilities through the official
`ollama` and `openai` Python packages, against a running wick with real models.

Run by tests/structured.rs with OLLAMA_HOST pointing at the server and WICK_TEST_MODELS
naming the imported models (comma-separated; the first is the tool-capable Qwen model)
and WICK_TEST_THINK_MODEL a model whose Go template supports thinking. Every check
raises on failure; the last line printed is 'N passed, 0 failed'.
"""

import concurrent.futures
import json
import math
import os
import sys

import httpx
import jsonschema
import ollama
import openai
import pydantic

host = os.environ["OLLAMA_HOST"]
models = os.environ["WICK_TEST_MODELS"].split(",")
qwen = models[0]
think_model = os.environ["WICK_TEST_THINK_MODEL"]
client = ollama.Client(host=host, timeout=600)
oa = openai.OpenAI(base_url=f"{host}/v1", api_key="unused", timeout=600, max_retries=0)
http = httpx.Client(base_url=host, timeout=600)
passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAILED {name}: {detail}", flush=True)
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"ok {name}", flush=True)


def short_string(**extra):
    return {"type": "string", "maxLength": 24, **extra}


SCHEMAS = {
    "enum_and_bounds": {
        "type": "object",
        "properties": {
            "color": {"type": "string", "enum": ["red", "green", "blue"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["color", "confidence"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "name": short_string(),
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "address": {
                "type": "object",
                "properties": {
                    "city": short_string(),
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                },
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "age", "address"],
        "additionalProperties": False,
    },
    "arrays": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": short_string(), "minItems": 2, "maxItems": 4},
            "count": {"type": "integer", "minimum": 1, "maximum": 10},
        },
        "required": ["tags", "count"],
        "additionalProperties": False,
    },
    "any_of_const": {
        "type": "object",
        "properties": {
            "result": {"anyOf": [{"type": "integer", "minimum": -1000, "maximum": 1000}, short_string()]},
            "ok": {"const": True},
        },
        "required": ["result", "ok"],
        "additionalProperties": False,
    },
    "refs": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "minimum": -100, "maximum": 100},
                    "y": {"type": "integer", "minimum": -100, "maximum": 100},
                },
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"],
        "additionalProperties": False,
    },
    "pattern_bool": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
            "active": {"type": "boolean"},
            "version": {"const": "v1"},
        },
        "required": ["id", "active", "version"],
        "additionalProperties": False,
    },
}

PROMPTS = {
    "enum_and_bounds": "Pick a color for the sky and say how sure you are.",
    "nested": "Describe a fictional person who lives in a city.",
    "arrays": "Give a few tags for a blog post about Rust.",
    "any_of_const": "What is 6 times 7?",
    "refs": "Give a line segment from the origin to a point.",
    "pattern_bool": "Make up a product record.",
}


def generate_one(job):
    """One structured generation; returns (schema name, text, done_reason)."""
    i, name, model = job
    schema = SCHEMAS[name]
    # Every schema here is bounded; the cap only keeps a broken grammar from hanging CI.
    options = {"temperature": 0.8, "seed": 100 + i, "num_predict": 512}
    messages = [{"role": "user", "content": PROMPTS[name]}]
    if i % 2 == 0:
        r = client.chat(model=model, messages=messages, format=schema, options=options)
        return name, r.message.content, r.done_reason
    text = ""
    reason = None
    for part in client.chat(model=model, messages=messages, format=schema, options=options, stream=True):
        text += part.message.content or ""
        if part.done:
            reason = part.done_reason
    return name, text, reason


# 60 generations, 6 schemas x 10 (half streamed, both models, four at a time).
jobs = [(i, name, models[i % len(models)]) for name in SCHEMAS for i in range(10)]
with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(generate_one, jobs))
valid = 0
for name, text, reason in results:
    try:
        value = json.loads(text)
        jsonschema.validate(value, SCHEMAS[name])
        valid += 1
    except Exception as e:  # noqa: BLE001 - reported below
        check(f"schema {name} output validates", False, f"{e!r}: {text!r} ({reason})")
check("60 schema generations parse and validate", valid == 60 and len(results) == 60, valid)

# format "json": always a JSON object. Free-form JSON is unbounded (a sampled string
# value can run on for ever), so each run is capped: a run that ends parses as an
# object; one cut by the cap is still the start of an object.
stopped = 0
for i, model in enumerate(models * 3):
    r = client.generate(model=model, prompt="Describe a person as a JSON object with the keys name, age and city.",
                        format="json", options={"temperature": 0.8, "seed": i, "num_predict": 256})
    if r.done_reason == "length":
        check(f"format json cut by num_predict starts an object ({model} #{i})",
              r.response.lstrip().startswith("{"), r.response)
        continue
    stopped += 1
    try:
        value = json.loads(r.response)
    except ValueError as e:
        check("format json parses", False, f"{e}: {r.response!r}")
        continue
    check(f"format json is an object ({model} #{i})", isinstance(value, dict), r.response)
check("most format json runs end by themselves", stopped >= 4, stopped)

# An invalid schema is a 400 before anything runs.
bad = http.post("/api/chat", json={"model": qwen, "messages": [{"role": "user", "content": "x"}],
                                   "format": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}})
check("invalid schema is a 400", bad.status_code == 400, (bad.status_code, bad.text))
check("invalid schema error names it", "format" in bad.json().get("error", ""), bad.text)


# The ollama client with a pydantic model's schema.
class Country(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=30)
    capital: str = pydantic.Field(max_length=30)
    languages: list[str] = pydantic.Field(min_length=1, max_length=3)


r = client.chat(model=qwen, messages=[{"role": "user", "content": "Tell me about Canada."}],
                format=Country.model_json_schema(), options={"temperature": 0})
country = Country.model_validate_json(r.message.content)
check("ollama client format=model_json_schema()", len(country.languages) >= 1, country)

# The openai client's parse helper (json_schema, strict).
completion = oa.beta.chat.completions.parse(
    model=qwen,
    messages=[{"role": "user", "content": "Tell me about France."}],
    response_format=Country,
    temperature=0,
)
parsed = completion.choices[0].message.parsed
check("openai beta.chat.completions.parse", isinstance(parsed, Country), completion)
r = oa.chat.completions.create(model=qwen, messages=[{"role": "user", "content": "Three primes as JSON."}],
                               response_format={"type": "json_object"}, temperature=0)
check("openai json_object parses", isinstance(json.loads(r.choices[0].message.content), dict), r)

# Tools: a streamed weather call; no tool JSON in any content chunk.
weather = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}
ask = [{"role": "user", "content": "What is the weather in Toronto?"}]
calls, contents = [], []
for part in client.chat(model=qwen, messages=ask, tools=[weather], stream=True, options={"temperature": 0}):
    contents.append(part.message.content or "")
    calls.extend(part.message.tool_calls or [])
check("streamed tool call", len(calls) >= 1 and calls[0].function.name == "get_current_weather", calls)
check("no tool JSON in content", not any("get_current_weather" in c or "{" in c for c in contents), contents)
stream = oa.chat.completions.create(model=qwen, messages=ask, tools=[weather], stream=True, temperature=0)
oa_calls, oa_content = [], ""
for chunk in stream:
    if not chunk.choices:
        continue
    delta = chunk.choices[0].delta
    oa_content += delta.content or ""
    oa_calls.extend(delta.tool_calls or [])
check("/v1 streamed tool call", len(oa_calls) >= 1, oa_calls)
check("/v1 tool arguments are a string", isinstance(oa_calls[0].function.arguments, str)
      and "city" in json.loads(oa_calls[0].function.arguments), oa_calls)
check("/v1 no tool JSON in content", "get_current_weather" not in oa_content, oa_content)
# An assistant message with tool_calls and content null is accepted.
r = oa.chat.completions.create(model=qwen, temperature=0, max_tokens=8, messages=ask + [
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_current_weather", "arguments": "{\"city\": \"Toronto\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "-5 C, snow"},
], tools=[weather])
check("content null with tool_calls accepted", r.choices[0].finish_reason in ("stop", "length"), r)

# Thinking: thinking and content come apart; think:false takes the template's other branch.
# (A few-shot turn shows the small non-thinking Qwen model how to close its thinking.)
think_ask = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "thinking": "Two plus two makes four.", "content": "4"},
    {"role": "user", "content": "What is 12 + 30?"},
]
r = client.chat(model=think_model, messages=think_ask, think=True, options={"temperature": 0, "num_predict": 160})
check("think:true gives thinking", bool(r.message.thinking), r.message)
check("think:true gives content apart from it", bool(r.message.content) and r.message.content != r.message.thinking,
      r.message)
check("no tags in thinking or content", all("think>" not in (x or "") for x in (r.message.thinking, r.message.content)),
      r.message)
parts = list(client.chat(model=think_model, messages=think_ask, think=True, stream=True,
                         options={"temperature": 0, "num_predict": 160}))
check("streamed thinking == non-streamed", "".join(p.message.thinking or "" for p in parts) == r.message.thinking
      and "".join(p.message.content or "" for p in parts) == r.message.content, parts[-3:])
unset = client.chat(model=think_model, messages=think_ask, options={"temperature": 0, "num_predict": 160})
check("a thinking model thinks by default", unset.message.thinking == r.message.thinking, unset.message)
r = client.chat(model=think_model, messages=think_ask, think=False, options={"temperature": 0, "num_predict": 40})
check("think:false gives no thinking", not r.message.thinking and r.message.content, r.message)


def rendered(think):
    body = {"model": think_model, "messages": think_ask, "think": think, "_debug_render_only": True}
    return http.post("/api/chat", json=body).json()["_debug_info"]["rendered_template"]


check("think:true renders the thinking branch", "<think>Two plus two makes four.</think>" in rendered(True),
      rendered(True))
check("think:false renders the other branch", "<think>" not in rendered(False), rendered(False))
nothink = http.post("/api/chat", json={"model": qwen, "messages": think_ask, "think": True})
check("think on a model without thinking is a 400", nothink.status_code == 400
      and nothink.json()["error"] == f"\"{qwen}\" does not support thinking", nothink.text)
r = oa.chat.completions.create(model=think_model, temperature=0, max_tokens=160, reasoning_effort="low",
                               messages=[{"role": m["role"], "content": m["content"], "reasoning": m["thinking"]}
                                         if "thinking" in m else m for m in think_ask])
check("/v1 reasoning", bool(getattr(r.choices[0].message, "reasoning", None)), r.choices[0].message)
# Structured output after thinking: the format applies to the answer only.
r = client.chat(model=think_model, messages=think_ask, think=True, format=SCHEMAS["arrays"],
                options={"temperature": 0, "num_predict": 300})
check("format with thinking validates", r.message.thinking and jsonschema.validate(json.loads(r.message.content),
                                                                                   SCHEMAS["arrays"]) is None,
      r.message)

# Log probabilities.
r = client.generate(model=qwen, prompt="The capital of France is", logprobs=True, top_logprobs=5,
                    options={"temperature": 0, "num_predict": 8})
lps = r.logprobs or []
check("logprobs per token", len(lps) == r.eval_count or len(lps) >= 1, (len(lps), r.eval_count))
for lp in lps:
    top = lp.top_logprobs or []
    check("5 alternatives", len(top) == 5, lp)
    total = sum(math.exp(t.logprob) for t in top)
    check("alternatives sum to at most 1", total <= 1.0 + 1e-4, total)
    check("first alternative is the sampled token at temperature 0", top[0].token == lp.token
          and abs(top[0].logprob - lp.logprob) < 1e-5, lp)
text = "".join(lp.token for lp in lps)
check("logprob tokens spell the response", text == r.response, (text, r.response))
r = oa.chat.completions.create(model=qwen, messages=[{"role": "user", "content": "Say hi"}], logprobs=True,
                               top_logprobs=3, temperature=0, max_tokens=6)
content = r.choices[0].logprobs.content
check("/v1 logprobs", len(content) >= 1 and len(content[0].top_logprobs) == 3 and content[0].bytes is not None, r)

print(f"{passed} passed, 0 failed")
