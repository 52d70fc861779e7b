"""The OpenAI-compatible routes through the official `openai` Python package, against a
running wick with real models.

Run by tests/openai.rs with OPENAI_BASE_URL pointing at the server's /v1,
WICK_TEST_MODEL a small chat model and WICK_TEST_TOOL_MODEL a model whose template
supports tools. Every check raises on failure; the last line printed is
'N passed, 0 failed'.
"""

import json
import os
import sys

import jsonschema
import openai

model = os.environ["WICK_TEST_MODEL"]
tool_model = os.environ["WICK_TEST_TOOL_MODEL"]
oa = openai.OpenAI(timeout=600, max_retries=0)
passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAILED {name}: {detail}", flush=True)
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"ok {name}", flush=True)


MESSAGES = [{"role": "user", "content": "Name three colors."}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Get the local time of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
]

# Chat, not streamed and streamed: the same text at temperature 0.
r = oa.chat.completions.create(model=model, messages=MESSAGES, max_tokens=16, temperature=0)
text = r.choices[0].message.content
check("chat", bool(text) and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r)
chunks = list(
    oa.chat.completions.create(
        model=model,
        messages=MESSAGES,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
)
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("chat streamed", streamed == text, (streamed, text))
check("stream usage", chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0)

# n=3: three choices, equal at temperature 0; reproducible with a seed.
r = oa.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12, temperature=0, n=3)
check("n=3", [c.index for c in r.choices] == [0, 1, 2], r.choices)
check("n=3 greedy equal", len({c.message.content for c in r.choices}) == 1, r.choices)
seeded = [
    [c.message.content for c in oa.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=12, temperature=1.0, seed=7, n=3
    ).choices]
    for _ in range(2)
]
check("n=3 seeded reproducible", seeded[0] == seeded[1], seeded)
stream = oa.chat.completions.create(
    model=model, messages=MESSAGES, max_tokens=12, temperature=1.0, seed=7, n=3, stream=True
)
per_choice = ["", "", ""]
for c in stream:
    for ch in c.choices:
        per_choice[ch.index] += ch.delta.content or ""
check("n=3 streamed", per_choice == seeded[0], (per_choice, seeded[0]))

# Log probabilities.
r = oa.chat.completions.create(
    model=model, messages=MESSAGES, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
)
lp = r.choices[0].logprobs.content
check("logprobs", len(lp) > 0 and all(len(t.top_logprobs) == 3 for t in lp), lp)
check("logprobs are log probabilities", all(t.logprob <= 0 for t in lp))

# response_format json_schema.
schema = {
    "type": "object",
    "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]}},
    "required": ["color"],
    "additionalProperties": False,
}
r = oa.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Pick a color."}],
    response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema, "strict": True}},
    max_tokens=40,
)
value = json.loads(r.choices[0].message.content)
jsonschema.validate(value, schema)
check("response_format json_schema", True)


def one_call(r, name):
    calls = r.choices[0].message.tool_calls or []
    return (
        len(calls) >= 1
        and calls[0].function.name == name
        and isinstance(json.loads(calls[0].function.arguments), dict)
    )


# tool_choice: required (on a question that needs no tool), and a named function.
joke = [{"role": "user", "content": "Tell me a joke about cats."}]
r = oa.chat.completions.create(
    model=tool_model, messages=joke, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=80
)
calls = r.choices[0].message.tool_calls or []
check("tool_choice required", len(calls) == 1 and calls[0].function.name in ("get_weather", "get_time"), r)
check("tool_choice required finish_reason", r.choices[0].finish_reason == "tool_calls", r)
r = oa.chat.completions.create(
    model=tool_model,
    messages=joke,
    tools=TOOLS,
    tool_choice={"type": "function", "function": {"name": "get_time"}},
    temperature=0,
    max_tokens=80,
)
check("tool_choice named", one_call(r, "get_time"), r)
args = json.loads(r.choices[0].message.tool_calls[0].function.arguments)
check("named call arguments match the schema", isinstance(args.get("city"), str), args)
r = oa.chat.completions.create(
    model=tool_model,
    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    tools=TOOLS,
    tool_choice="none",
    temperature=0,
    max_tokens=40,
)
check("tool_choice none", not r.choices[0].message.tool_calls, r)

# Completions with a list of prompts.
r = oa.completions.create(model=model, prompt=["The sky is", "Grass is"], max_tokens=5, temperature=0)
check("completions list", [c.index for c in r.choices] == [0, 1] and all(c.text for c in r.choices), r)
r = oa.completions.create(model=model, prompt="Once upon a time", max_tokens=4, logprobs=2, temperature=0)
check("completions logprobs", len(r.choices[0].logprobs.tokens) == 4, r.choices[0].logprobs)

# Bad requests are 400s (no retries) naming the field.
try:
    oa.chat.completions.create(model=model, messages=MESSAGES, logit_bias={"1": 5})
    check("unsupported field is a 400", False, "no error")
except openai.BadRequestError as e:
    check("unsupported field is a 400", e.body.get("param") == "logit_bias", e.body)

# Responses, not streamed and streamed.
r = oa.responses.create(model=model, instructions="Answer briefly.", input="Say hello.", max_output_tokens=16, temperature=0)
check("responses", r.status in ("completed", "incomplete") and bool(r.output_text), r)
check("responses usage", r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage)
events = list(
    oa.responses.create(model=model, instructions="Answer briefly.", input="Say hello.", max_output_tokens=16, temperature=0, stream=True)
)
kinds = [e.type for e in events]
check("responses streamed events", kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete"), kinds)
deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
check("responses streamed text", deltas == r.output_text, (deltas, r.output_text))

# A function tool round trip through previous_response_id.
rtools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    }
]
first = oa.responses.create(
    model=tool_model, input="What is the weather in Paris?", tools=rtools, tool_choice="required", temperature=0
)
fc = [o for o in first.output if o.type == "function_call"]
check("responses function call", len(fc) == 1 and fc[0].name == "get_weather", first.output)
json.loads(fc[0].arguments)
second = oa.responses.create(
    model=tool_model,
    previous_response_id=first.id,
    input=[{"type": "function_call_output", "call_id": fc[0].call_id, "output": "Sunny, 24 C"}],
    tools=rtools,
    tool_choice="none",
    temperature=0,
    max_output_tokens=60,
)
check("responses round trip", bool(second.output_text) and second.previous_response_id == first.id, second)
stream = oa.responses.create(
    model=tool_model, input="What is the weather in Rome?", tools=rtools, tool_choice="required", temperature=0, stream=True
)
args = [e for e in stream if e.type == "response.function_call_arguments.done"]
check("responses streamed function call", len(args) == 1 and "city" in json.loads(args[0].arguments), args)

# Models.
ids = [m.id for m in oa.models.list().data]
check("models.list", model in ids and tool_model in ids, ids)
check("models.retrieve", oa.models.retrieve(model).id == model)

print(f"{passed} passed, 0 failed")
