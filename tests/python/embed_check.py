"""Embeddings through the official `ollama` and `openai` Python packages against a
running wick with an embedding model.

Run by tests/embed.rs with OLLAMA_HOST pointing at the server and WICK_TEST_MODEL naming
the imported embedding model. Every check raises on failure; the last line printed is
'N passed, 0 failed'.
"""

import base64
import math
import os
import struct
import sys

import ollama
import openai

host = os.environ["OLLAMA_HOST"]
model = os.environ["WICK_TEST_MODEL"]
client = ollama.Client(host=host, timeout=600)
oa = openai.OpenAI(base_url=f"{host}/v1", api_key="unused", timeout=600, max_retries=0)
passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAILED {name}: {detail}", flush=True)
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"ok {name}", flush=True)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


texts = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome!"]

# ollama.embed with a list: one vector per input, unit length, the reference cosine.
r = client.embed(model=model, input=texts)
check("embed list count", len(r.embeddings) == 3, r)
check("embed dims", all(len(v) == 384 for v in r.embeddings))
check("embed unit length", all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5 for v in r.embeddings))
c = cosine(r.embeddings[0], r.embeddings[1])
check("embed reference cosine", abs(c - 0.755) < 0.01, c)
check("embed prompt_eval_count", (r.prompt_eval_count or 0) > 0, r.prompt_eval_count)
native = r.embeddings

# dimensions and truncate through the client.
r = client.embed(model=model, input=texts[0], dimensions=32)
check("embed dimensions", len(r.embeddings[0]) == 32)
try:
    client.embed(model=model, input="word " * 1000, truncate=False)
    check("embed truncate false refused", False, "no error")
except ollama.ResponseError as e:
    check("embed truncate false refused", e.status_code == 400
          and "exceeds the context length" in e.error, e)

# The legacy client call.
r = client.embeddings(model=model, prompt=texts[0])
check("embeddings legacy", len(r.embedding) == 384 and cosine(r.embedding, native[0]) > 0.99999)

# openai embeddings.create, float.
r = oa.embeddings.create(model=model, input=texts, encoding_format="float")
check("openai float count", len(r.data) == 3 and [d.index for d in r.data] == [0, 1, 2])
floats = [d.embedding for d in r.data]
check("openai float equals native", all(max(abs(a - b) for a, b in zip(f, n)) < 1e-6
                                        for f, n in zip(floats, native)))
check("openai usage", r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens,
      r.usage)

# openai embeddings.create, base64 asked explicitly: the package returns the string.
r = oa.embeddings.create(model=model, input=texts, encoding_format="base64")
decoded = []
for d in r.data:
    raw = base64.b64decode(d.embedding)
    decoded.append(list(struct.unpack(f"<{len(raw) // 4}f", raw)))
check("openai base64 equals float", all(max(abs(a - b) for a, b in zip(x, f)) == 0
                                        for x, f in zip(decoded, floats)))

# openai's default: the package asks for base64 and decodes it itself.
r = oa.embeddings.create(model=model, input=texts[0])
check("openai default decodes", isinstance(r.data[0].embedding, list)
      and max(abs(a - b) for a, b in zip(r.data[0].embedding, floats[0])) < 1e-6)

r = oa.embeddings.create(model=model, input=texts[0], dimensions=64)
check("openai dimensions", len(r.data[0].embedding) == 64)

try:
    oa.embeddings.create(model=model, input=[])
    check("openai empty list refused", False, "no error")
except openai.BadRequestError as e:
    check("openai empty list refused", "invalid input" in str(e), e)

print(f"{passed} passed, 0 failed")
