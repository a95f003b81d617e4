#!/usr/bin/env bash
# `aicp train` against PyTorch running the same recipe on the same Fashion-MNIST files, several
# seeds each, on this machine, in one run. Prints each run and the ratios of the means.
#
#   bench/train-vs-pytorch.sh [SEEDS]          # default SEEDS=3
#
# Needs Debian's dataset-fashion-mnist and a PyTorch install (benchmark only, never in CI):
#   python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
#   TORCH_PYTHON=/tmp/torchvenv/bin/python bench/train-vs-pytorch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-3}
data=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
torch_python=${TORCH_PYTHON:-/tmp/torchvenv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo build --release --quiet -p aicp-cli
for seed in $(seq 1 "$seeds"); do
    ./target/release/aicp train --dataset fashion-mnist --data-dir "$data" --offline -q \
        --seed "$seed" --output "$out/fashion.onnx" > /dev/null
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"engine":"aicp","threads":1,"seed":int(sys.argv[2]),"train_seconds":round(r["train_seconds"],3),"test_accuracy":r["test_accuracy"]}))' \
        "$out/fashion.training_report.json" "$seed" | tee -a "$out/runs.jsonl"
    for threads in 1 2; do
        "$torch_python" bench/train_pytorch.py "$data" --threads "$threads" --seed "$seed" |
            python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r["engine"]="pytorch "+r.pop("torch"); r["seed"]=int(sys.argv[1]); print(json.dumps(r))' "$seed" |
            tee -a "$out/runs.jsonl"
    done
done
python3 - "$out/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
groups = {}
for r in runs:
    groups.setdefault((r["engine"].split()[0], r["threads"]), []).append(r)
mean = {k: (statistics.mean(r["train_seconds"] for r in v), statistics.mean(r["test_accuracy"] for r in v)) for k, v in groups.items()}
print()
print(f"{'engine':<10}{'threads':>8}{'mean seconds':>14}{'mean test acc':>15}")
for (engine, threads), (sec, acc) in sorted(mean.items()):
    print(f"{engine:<10}{threads:>8}{sec:>14.2f}{acc:>15.4f}")
aicp = mean[("aicp", 1)]
for threads in (1, 2):
    torch = mean[("pytorch", threads)]
    print(f"aicp time / PyTorch {threads}-thread time: {aicp[0] / torch[0]:.2f}   accuracy difference: {aicp[1] - torch[1]:+.4f}")
PY
