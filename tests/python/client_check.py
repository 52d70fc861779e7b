"""Drive a running wick server with the official `ollama` Python client.

Run by tests/python_client.rs with OLLAMA_HOST pointing at the server, WICK_TEST_MODEL
naming an imported model and WICK_TEST_GGUF the model file (for create_blob/create).
Every check raises on failure; the last line printed is 'N passed, 0 failed'.
"""

import os
import sys

import ollama

host = os.environ["OLLAMA_HOST"]
model = os.environ["WICK_TEST_MODEL"]
gguf = os.environ["WICK_TEST_GGUF"]
client = ollama.Client(host=host)
greedy = {"temperature": 0, "num_predict": 12, "seed": 3}
passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAILED {name}: {detail}", flush=True)
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"ok {name}", flush=True)


# generate, not streamed and streamed: the same greedy text
r = client.generate(model=model, prompt="The capital of France is", options=greedy)
check("generate", isinstance(r.response, str) and len(r.response) > 0, r)
check("generate done", r.done and r.done_reason in ("stop", "length"), r)
check("generate metrics", r.eval_count and r.eval_count > 0 and r.total_duration > 0, r)
check("generate context", r.context and len(r.context) > 5, r)
parts = list(client.generate(model=model, prompt="The capital of France is", options=greedy, stream=True))
check("generate stream ends done", parts[-1].done, parts[-1])
check("generate stream == non-stream", "".join(p.response for p in parts) == r.response,
      ("".join(p.response for p in parts), r.response))

# chat, not streamed and streamed
msgs = [{"role": "user", "content": "Say hello."}]
c = client.chat(model=model, messages=msgs, options=greedy)
check("chat", c.message.role == "assistant" and len(c.message.content) > 0, c)
chunks = list(client.chat(model=model, messages=msgs, options=greedy, stream=True))
check("chat stream ends done", chunks[-1].done, chunks[-1])
check("chat stream == non-stream", "".join(x.message.content for x in chunks) == c.message.content)

# list, show, ps
names = [m.model for m in client.list().models]
check("list", model in names, names)
s = client.show(model)
check("show details", s.details.format == "gguf" and s.details.family == "llama", s.details)
check("show model_info", s.modelinfo.get("llama.context_length") == 8192, s.modelinfo.get("llama.context_length"))
check("show capabilities", "completion" in (s.capabilities or []), s.capabilities)
ps = client.ps()
check("ps", any(m.model == model for m in ps.models), ps)
check("ps context_length", all((m.context_length or 0) > 0 for m in ps.models), ps)

# copy, delete
client.copy(model, "wick-test-copy:latest")
check("copy", "wick-test-copy:latest" in [m.model for m in client.list().models])
client.delete("wick-test-copy:latest")
check("delete", "wick-test-copy:latest" not in [m.model for m in client.list().models])
try:
    client.delete("wick-test-copy:latest")
    check("delete missing is 404", False, "no error")
except ollama.ResponseError as e:
    check("delete missing is 404", e.status_code == 404, e)

# create_blob + create from the uploaded GGUF
digest = client.create_blob(gguf)
check("create_blob", digest.startswith("sha256:"), digest)
res = client.create(model="wick-test-created", files={"model.gguf": digest},
                    system="You are terse.", parameters={"temperature": 0.1})
check("create", res.status == "success", res)
s2 = client.show("wick-test-created")
check("created model system", "You are terse." in (s2.modelfile or ""), s2)
r2 = client.generate(model="wick-test-created", prompt="Hi", options={"num_predict": 4, "temperature": 0})
check("created model generates", r2.done, r2)
client.delete("wick-test-created")

# errors surface as ResponseError with Ollama's status codes
try:
    client.generate(model="no-such-model", prompt="x")
    check("unknown model is 404", False, "no error")
except ollama.ResponseError as e:
    check("unknown model is 404", e.status_code == 404 and "not found" in e.error, e)

# pull, streamed: the server pulls from itself over the registry protocol (it serves
# /v2/), and the client sees Ollama's progress objects in order
hostport = host.split("://", 1)[-1].rstrip("/")
remote = f"{hostport}/library/{model.split(':')[0]}:{model.split(':')[1]}"
steps = list(client.pull(remote, insecure=True, stream=True))
statuses = [s.status for s in steps]
check("pull starts with the manifest", statuses[0] == "pulling manifest", statuses)
check("pull ends in order", statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"],
      statuses)
layers = [s for s in steps if s.digest]
check("pull reports layers", len(layers) >= 2 and all(s.status == f"pulling {s.digest[7:19]}"
                                                       and s.total and s.completed == s.total
                                                       for s in layers), layers)
r = client.pull(remote, insecure=True)
check("pull not streamed", r.status == "success", r)
names = [m.model for m in client.list().models]
check("pulled model listed", remote in names, names)

print(f"{passed} passed, 0 failed")
