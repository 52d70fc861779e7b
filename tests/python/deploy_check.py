"""The deployment files: Kubernetes manifests parse and carry what docs/deploy.md says.

Run by tests/deploy.rs with the repository root as argv[1]. Every check exits on
failure; the last line printed is 'N passed, 0 failed'.
"""

import glob
import os
import re
import sys

import yaml

root = sys.argv[1]
passed = 0
# wick's drain timeout (WICK_SHUTDOWN_TIMEOUT's default) and what the pod adds to it.
DRAIN_SECONDS = 30


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAILED {name}: {detail}", flush=True)
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"ok {name}", flush=True)


def seconds(text):
    m = re.fullmatch(r"(\d+)(s?)", str(text))
    return int(m.group(1)) if m else None


docs = {}
for path in sorted(glob.glob(os.path.join(root, "deploy", "k8s", "*.yaml"))):
    with open(path) as f:
        loaded = [d for d in yaml.safe_load_all(f) if d is not None]
    check(f"{os.path.basename(path)} parses", len(loaded) > 0, path)
    for d in loaded:
        check(
            f"{os.path.basename(path)}: {d.get('kind')} has apiVersion, kind, metadata.name",
            d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"),
            d,
        )
        docs.setdefault(d["kind"], []).append(d)

for kind in ["Deployment", "Service", "PersistentVolumeClaim", "InferencePool"]:
    check(f"a {kind}", kind in docs, sorted(docs))

deployment = docs["Deployment"][0]
pod = deployment["spec"]["template"]["spec"]
labels = deployment["spec"]["template"]["metadata"]["labels"]
check(
    "the Deployment's selector matches its pods",
    deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(),
)
wick = next(c for c in pod["containers"] if c["name"] == "wick")
env = {e["name"]: e.get("value") for e in wick.get("env", [])}
check("OLLAMA_HOST listens on every interface", env.get("OLLAMA_HOST") == "0.0.0.0:11434", env)
port = wick["ports"][0]["containerPort"]
check("the container port is 11434", port == 11434, port)

ready = wick.get("readinessProbe", {}).get("httpGet", {})
check("readiness is GET /api/version", ready.get("path") == "/api/version", ready)
check("a liveness probe", "httpGet" in wick.get("livenessProbe", {}), wick.get("livenessProbe"))

drain = seconds(env.get("WICK_SHUTDOWN_TIMEOUT"))
check("WICK_SHUTDOWN_TIMEOUT is set explicitly", drain == DRAIN_SECONDS, env)
pre_stop = wick.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
grace = pod.get("terminationGracePeriodSeconds", 30)
check(
    "the grace period covers preStop + the drain timeout + a margin",
    grace >= pre_stop + drain + 5,
    (grace, pre_stop, drain),
)

models_dir = env.get("OLLAMA_MODELS")
mounts = {m["mountPath"]: m["name"] for m in wick.get("volumeMounts", [])}
check("OLLAMA_MODELS is a mounted volume", models_dir in mounts, (models_dir, mounts))
volume = next(v for v in pod["volumes"] if v["name"] == mounts[models_dir])
claim = volume.get("persistentVolumeClaim", {}).get("claimName")
pvcs = {p["metadata"]["name"]: p for p in docs["PersistentVolumeClaim"]}
check("the models volume is the PersistentVolumeClaim", claim in pvcs, (claim, sorted(pvcs)))
check(
    "the claim can be shared by replicas",
    "ReadWriteMany" in pvcs[claim]["spec"]["accessModes"] or deployment["spec"]["replicas"] == 1,
)
check("the pod runs as non-root", pod.get("securityContext", {}).get("runAsNonRoot") is True)

service = docs["Service"][0]
check(
    "the Service selects the pods",
    service["spec"]["selector"].items() <= labels.items(),
    service["spec"]["selector"],
)

pool = docs["InferencePool"][0]
check(
    "InferencePool is inference.networking.k8s.io/v1",
    pool["apiVersion"] == "inference.networking.k8s.io/v1",
    pool["apiVersion"],
)
check(
    "the pool selects the pods",
    pool["spec"]["selector"]["matchLabels"].items() <= labels.items(),
)
check(
    "the pool targets wick's port",
    [p["number"] for p in pool["spec"]["targetPorts"]] == [port],
    pool["spec"]["targetPorts"],
)
check("the pool names its endpoint picker", pool["spec"]["endpointPickerRef"].get("name"))

epp = yaml.safe_load(docs["ConfigMap"][0]["data"]["config.yaml"])
extractor = next(p for p in epp["plugins"] if p["type"] == "core-metrics-extractor")
engine = extractor["parameters"]["engineConfigs"][0]
check(
    "the picker reads wick's metric names",
    (engine["queuedRequestsSpec"], engine["runningRequestsSpec"], engine["kvUsageSpec"])
    == ("wick_queue_depth", "wick_running_requests", "wick_kv_cache_utilization"),
    engine,
)
check(
    "the pods carry the picker's engine label",
    labels.get("inference.networking.k8s.io/engine-type") == engine["name"],
    labels,
)

for name in ["Dockerfile", "Dockerfile.cuda"]:
    with open(os.path.join(root, "deploy", name)) as f:
        text = f.read()
    check(f"{name} sets OLLAMA_HOST=0.0.0.0:11434", "OLLAMA_HOST=0.0.0.0:11434" in text)
    check(f"{name} keeps models on a volume", 'VOLUME ["/models"]' in text)
    check(f"{name} has a HEALTHCHECK", "HEALTHCHECK" in text)
    user = re.findall(r"^USER (\S+)", text, re.M)
    check(f"{name} runs as a non-root user", user and not user[-1].startswith("0"), user)

print(f"{passed} passed, 0 failed")
