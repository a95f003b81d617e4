"""Reads the figures bench/run.sh wrote to OUT and prints them as ratios against their baselines
and the targets of the throughput issue, as Markdown.

Usage: report.py OUT
"""

import json
import os
import sys

out = sys.argv[1]


def read(name):
    with open(os.path.join(out, name + ".json")) as f:
        return json.load(f)


def level(name, concurrency):
    return next(r for r in read(name) if r.get("concurrency") == concurrency)


rows = []


def row(what, value, baseline, ratio, target=None, higher_is_better=True):
    if target is None:
        verdict = ""
    elif (ratio >= target) if higher_is_better else (ratio <= target):
        verdict = "met"
    else:
        verdict = "MISSED"
    goal = "" if target is None else ("≥ " if higher_is_better else "≤ ") + f"{target:g}x"
    rows.append(f"| {what} | {value} | {baseline} | {ratio:.2f}x | {goal} | {verdict} |")


engines = {f["batch"]: f for f in read("engines") if f.get("model", "mlp") == "mlp"}
python = {f["batch"]: f for f in read("python_onnxruntime")}
for batch in (1, 1024):
    ours, theirs = engines[batch], python[batch]["samples_per_s"]
    row(
        f"engine, MLP batch {batch}, samples/s: aicp onnxruntime vs Python onnxruntime",
        f"{ours['onnxruntime_samples_per_s']:,.0f}",
        f"{theirs:,.0f}",
        ours["onnxruntime_samples_per_s"] / theirs,
        0.9 if batch == 1024 else None,
    )
    row(
        f"engine, MLP batch {batch}, samples/s: aicp tract vs Python onnxruntime",
        f"{ours['tract_samples_per_s']:,.0f}",
        f"{theirs:,.0f}",
        ours["tract_samples_per_s"] / theirs,
    )

embed, baseline_embed = level("aicp_embed", 64), level("baseline_embed", 64)
row(
    "text embeddings, c=64, requests/s: aicp /embed vs FastAPI + tokenizers + onnxruntime",
    f"{embed['throughput']:,.0f}",
    f"{baseline_embed['throughput']:,.0f}",
    embed["throughput"] / baseline_embed["throughput"],
    10,
)

prepare, python_prepare = read("prepare"), read("python_prepare")
row(
    f"a 640x480 JPEG made an ImageNet input, µs: aicp vs {python_prepare['baseline']}",
    f"{prepare['median_us']:,.0f}",
    f"{python_prepare['median_us']:,.0f}",
    python_prepare["median_us"] / prepare["median_us"],
    2,
)

chain = read("chain")
overhead = chain["overhead_us"]
rows.append(
    f"| a chain of two steps, c=1 in process, µs per request: the chain vs its two steps one "
    f"after the other ({chain['engine']}; its own cost {overhead:.1f} µs, target ≤ 30 µs) "
    f"| {chain['chain_us']:.1f} | {2 * chain['step_us']:.1f} "
    f"| {chain['chain_us'] / (2 * chain['step_us']):.2f}x | ≤ 30 µs "
    f"| {'met' if overhead <= 30 else 'MISSED'} |"
)

scheduler = read("scheduler")
row(
    f"batcher in process, 64 submitters, requests/s: on (avg batch {scheduler['average_batch']:.1f}) vs off",
    f"{scheduler['batching_on_requests_per_s']:,.0f}",
    f"{scheduler['batching_off_requests_per_s']:,.0f}",
    scheduler["batching_on_requests_per_s"] / scheduler["batching_off_requests_per_s"],
    3.0,
)

baseline_1, baseline_64 = level("baseline", 1), level("baseline", 64)
for name, label in [("aicp_batching_on", "batching on"), ("aicp_batching_off", "batching off")]:
    ours_1, ours_64 = level(name, 1), level(name, 64)
    row(
        f"classify c=1, p50 latency (us): aicp ({label}) vs FastAPI baseline",
        ours_1["latency_us"]["p50"],
        baseline_1["latency_us"]["p50"],
        ours_1["latency_us"]["p50"] / baseline_1["latency_us"]["p50"],
        0.1 if name == "aicp_batching_on" else None,
        higher_is_better=False,
    )
    row(
        f"classify c=64, requests/s: aicp ({label}, avg batch {ours_64['server_avg_batch'] or 0:.1f}) vs FastAPI baseline",
        f"{ours_64['throughput']:,.0f}",
        f"{baseline_64['throughput']:,.0f}",
        ours_64["throughput"] / baseline_64["throughput"],
        15.0 if name == "aicp_batching_on" else None,
    )
on_64, off_64 = level("aicp_batching_on", 64), level("aicp_batching_off", 64)
row(
    "classify c=64 over HTTP, requests/s: batching on vs off",
    f"{on_64['throughput']:,.0f}",
    f"{off_64['throughput']:,.0f}",
    on_64["throughput"] / off_64["throughput"],
)
for model, label in [("cnn", "CNN"), ("wide", "wide MLP")]:
    on, off = level(f"aicp_{model}_batching_on", 64), level(f"aicp_{model}_batching_off", 64)
    row(
        f"{label}, V2 binary c=64 over HTTP, requests/s: batching on (avg batch {on['server_avg_batch'] or 0:.1f}) vs off",
        f"{on['throughput']:,.0f}",
        f"{off['throughput']:,.0f}",
        on["throughput"] / off["throughput"],
    )
binary, text = level("aicp_v2_binary", 64), level("aicp_v2_json", 64)
row(
    "V2 REST c=64, requests/s: binary tensors vs JSON",
    f"{binary['throughput']:,.0f}",
    f"{text['throughput']:,.0f}",
    binary["throughput"] / text["throughput"],
    2.0,
)
for concurrency in (1, 64):
    grpc = level("aicp_grpc", concurrency)
    classify = level("aicp_batching_on", concurrency)
    row(
        f"gRPC c={concurrency}, requests/s (p50 {grpc['latency_us']['p50']} us) vs classify over HTTP",
        f"{grpc['throughput']:,.0f}",
        f"{classify['throughput']:,.0f}",
        grpc["throughput"] / classify["throughput"],
    )

# The floor: each figure the best of its rounds (the most requests/s, the lowest p50).
setup = read("floor_setup")
floor_rows = []
for protocol, label in [("classify", "classify (JSON)"), ("v2_binary", "V2 binary"), ("grpc", "gRPC")]:
    rounds = range(1, setup["rounds"] + 1)
    ours = [read(f"pinned_{protocol}_{r}") for r in rounds]
    floor = [read(f"floor_{protocol}_{r}") for r in rounds]
    floor_model = [read(f"floor_model_{protocol}_{r}") for r in rounds]

    def at(run, concurrency):
        return next(l for l in run if l["concurrency"] == concurrency)

    def best_64(runs):
        return max(at(run, 64)["throughput"] for run in runs)

    def best_p50(runs):
        return min(at(run, 1)["latency_us"]["p50"] for run in runs)

    ours_64, floor_64, model_64 = best_64(ours), best_64(floor), best_64(floor_model)
    ours_p50, floor_p50, model_p50 = best_p50(ours), best_p50(floor), best_p50(floor_model)
    rows_before = len(rows)
    row(f"{label} c=64, requests/s: aicp vs the floor", f"{ours_64:,.0f}", f"{floor_64:,.0f}",
        ours_64 / floor_64, 0.85)
    row(f"{label} c=64, requests/s: aicp vs the floor running the model", f"{ours_64:,.0f}",
        f"{model_64:,.0f}", ours_64 / model_64)
    row(f"{label} c=1, p50 latency (us): aicp vs the floor", ours_p50, floor_p50,
        ours_p50 / floor_p50, 1.25, higher_is_better=False)
    row(f"{label} c=1, p50 latency (us): aicp vs the floor running the model", ours_p50,
        model_p50, ours_p50 / model_p50, higher_is_better=False)
    floor_rows += rows[rows_before:]
    del rows[rows_before:]

print(f"# aicp benchmark ({os.path.basename(out)}, {os.cpu_count()} cores; client and servers on this machine)\n")
print("| figure | aicp | baseline | ratio | target | |")
print("|---|---|---|---|---|---|")
print("\n".join(rows))
pinning = "server on core 0, load tool on core 1 (taskset)" if setup["pinned"] else "not pinned (one core)"
print(f"\n## Against the floor ({pinning}; best of {setup['rounds']} interleaved rounds)\n")
print("The floor is bench/floor: axum and tonic, at aicp's versions, parsing the same requests and")
print("answering fixed ones, with no model; aicp's figures include the inference. The floor running")
print("the model (bench/floor --model) also runs each request through ONNX Runtime (aicp's library,")
print("session settings and model file) on the thread that parsed it, one request at a time: what")
print("serving the model costs with nothing but the libraries.\n")
print("| figure | aicp | floor | ratio | target | |")
print("|---|---|---|---|---|---|")
print("\n".join(floor_rows))
# Before and after (BENCH_BEFORE): each figure the best of its rounds.
if os.path.exists(os.path.join(out, "before_classify_1.json")):
    rounds = range(1, setup["rounds"] + 1)

    def best(name, concurrency, p50=False):
        runs = [read(f"{name}_{r}") for r in rounds]
        levels = [next(l for l in run if l["concurrency"] == concurrency) for run in runs]
        return min(l["latency_us"]["p50"] for l in levels) if p50 else max(l["throughput"] for l in levels)

    del rows[:]
    for protocol, label in [("classify", "MLP, classify (JSON)"), ("v2_binary", "MLP, V2 binary"),
                            ("grpc", "MLP, gRPC"), ("cnn", "CNN, V2 binary")]:
        after, before = best(f"after_{protocol}", 64), best(f"before_{protocol}", 64)
        row(f"{label} c=64, requests/s: after vs before", f"{after:,.0f}", f"{before:,.0f}",
            after / before)
        if protocol != "cnn":
            after, before = best(f"after_{protocol}", 1, True), best(f"before_{protocol}", 1, True)
            row(f"{label} c=1, p50 latency (us): after vs before", after, before, after / before,
                higher_is_better=False)
    print(f"\n## Before and after ({pinning}; best of {setup['rounds']} interleaved rounds)\n")
    print("The same bundled models served by an earlier aicp binary (BENCH_BEFORE) and this one.\n")
    print("| figure | after | before | ratio | target | |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
print("\nEvery level's full figures (p50/p90/p99/max, errors, server batch size) are in the JSON files beside this one.")
