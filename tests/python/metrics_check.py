"""/metrics through the official `prometheus_client` parser, against a running wick.

Run by tests/operations.rs with OLLAMA_HOST pointing at the server and WICK_TEST_MODEL
naming an imported model. Scrapes, serves requests with the official `ollama` client,
scrapes again and checks that the counters moved by what was served. Every check exits
on failure; the last line printed is 'N passed, 0 failed'.
"""

import os
import sys
import urllib.request

import ollama
from prometheus_client.parser import text_string_to_metric_families

host = os.environ["OLLAMA_HOST"]
model = os.environ["WICK_TEST_MODEL"]
client = ollama.Client(host=host, timeout=600)
passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAILED {name}: {detail}", flush=True)
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"ok {name}", flush=True)


def scrape():
    with urllib.request.urlopen(f"{host}/metrics", timeout=60) as r:
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return text, families


def value(families, family, sample_name, **labels):
    f = families.get(family)
    if f is None:
        return 0.0
    total = 0.0
    for s in f.samples:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def tokens(families):
    return (
        value(families, "wick_prompt_tokens", "wick_prompt_tokens_total", model=model),
        value(families, "wick_generated_tokens", "wick_generated_tokens_total", model=model),
    )


text, before = scrape()
check("parses", len(before) > 0, text[:400])
for name, kind in [
    ("wick_http_requests", "counter"),
    ("wick_prompt_tokens", "counter"),
    ("wick_generated_tokens", "counter"),
    ("wick_time_to_first_token_seconds", "histogram"),
    ("wick_inter_token_latency_seconds", "histogram"),
    ("wick_decode_tokens_per_second", "histogram"),
    ("wick_model_load_duration_seconds", "histogram"),
    ("wick_http_request_duration_seconds", "histogram"),
    ("wick_queue_depth", "gauge"),
    ("wick_running_requests", "gauge"),
    ("wick_kv_cache_utilization", "gauge"),
    ("wick_running_sequences", "gauge"),
    ("wick_kv_cache_used_bytes", "gauge"),
    ("wick_kv_cache_budget_bytes", "gauge"),
    ("wick_loaded_models", "gauge"),
]:
    f = before.get(name)
    check(f"{name} is a {kind}", f is not None and f.type == kind, f and f.type)

gen_ok = dict(method="POST", route="/api/generate", status="200")
chat_ok = dict(method="POST", route="/api/chat", status="200")
requests_before = {
    "generate": value(before, "wick_http_requests", "wick_http_requests_total", **gen_ok),
    "chat": value(before, "wick_http_requests", "wick_http_requests_total", **chat_ok),
}
prompt_before, generated_before = tokens(before)
ttft_before = value(
    before,
    "wick_time_to_first_token_seconds",
    "wick_time_to_first_token_seconds_count",
    model=model,
)

opts = {"temperature": 0, "num_predict": 6, "seed": 1}
g = client.generate(model=model, prompt="The sky is", options=opts)
c = client.chat(model=model, messages=[{"role": "user", "content": "Hello!"}], options=opts)
served_prompt = g.prompt_eval_count + c.prompt_eval_count
served_generated = g.eval_count + c.eval_count

_, after = scrape()
for route in ["generate", "chat"]:
    ok = gen_ok if route == "generate" else chat_ok
    n = value(after, "wick_http_requests", "wick_http_requests_total", **ok)
    check(f"{route} requests counted", n == requests_before[route] + 1, n)
prompt_after, generated_after = tokens(after)
check(
    "prompt tokens counted",
    prompt_after - prompt_before == served_prompt,
    (prompt_before, prompt_after, served_prompt),
)
check(
    "generated tokens counted",
    generated_after - generated_before == served_generated,
    (generated_before, generated_after, served_generated),
)
ttft_after = value(
    after,
    "wick_time_to_first_token_seconds",
    "wick_time_to_first_token_seconds_count",
    model=model,
)
check("time to first token observed per request", ttft_after == ttft_before + 2, ttft_after)
check("a model is loaded", value(after, "wick_loaded_models", "wick_loaded_models") == 1)
check(
    "KV cache bytes within the budget",
    0
    < value(after, "wick_kv_cache_used_bytes", "wick_kv_cache_used_bytes", model=model)
    <= value(after, "wick_kv_cache_budget_bytes", "wick_kv_cache_budget_bytes"),
)
# The inference gateway's model-server signals (docs/deploy.md): unlabelled gauges.
for name in ["wick_queue_depth", "wick_running_requests", "wick_kv_cache_utilization"]:
    samples = [s for s in after[name].samples if s.name == name]
    check(f"{name} is one unlabelled sample", len(samples) == 1 and not samples[0].labels,
          samples)
check("queued and running are counts",
      value(after, "wick_queue_depth", "wick_queue_depth") >= 0
      and value(after, "wick_running_requests", "wick_running_requests") >= 0)
used = value(after, "wick_kv_cache_used_bytes", "wick_kv_cache_used_bytes", model=model)
budget = value(after, "wick_kv_cache_budget_bytes", "wick_kv_cache_budget_bytes")
utilization = value(after, "wick_kv_cache_utilization", "wick_kv_cache_utilization")
check("KV cache utilization is used / budget, within 0..1",
      0 < utilization <= 1 and abs(utilization - used / budget) < 1e-9,
      (utilization, used, budget))

buckets = [
    s
    for s in after["wick_decode_tokens_per_second"].samples
    if s.name.endswith("_bucket") and s.labels.get("model") == model
]
check(
    "decode rate histogram has an +Inf bucket holding every request",
    any(s.labels["le"] == "+Inf" and s.value >= 2 for s in buckets),
    buckets,
)

print(f"{passed} passed, 0 failed")
