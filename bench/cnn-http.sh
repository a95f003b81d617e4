#!/usr/bin/env bash
# The bundled CNN over HTTP on each CPU engine, in one run: one server serves models/mnist-cnn
# twice, as `cnn-onnxruntime` and `cnn-tract` (backend fixed in each copy's model.toml), and
# `aicp bench` drives each with V2 binary requests: batch 1 at concurrency 1 and 64, batch 64
# and batch 1024 at concurrency 4.
#
#   bench/cnn-http.sh [SECONDS]        # default 5 seconds a measurement
#
# Needs ONNX Runtime's library (scripts/test.sh puts it in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
cargo build --release --quiet --workspace
aicp=${CARGO_TARGET_DIR:-target}/release/aicp
models=$(mktemp -d)
trap 'kill "$server" 2> /dev/null || true; rm -rf "$models"' EXIT
for engine in onnxruntime tract; do
    mkdir -p "$models/cnn-$engine/1"
    cp models/mnist-cnn/1/model.onnx "$models/cnn-$engine/1/"
    # A top-level key, so before the file's tables.
    { echo "backend = \"$engine\""; cat models/mnist-cnn/model.toml; } > "$models/cnn-$engine/model.toml"
done
port=18437
"$aicp" serve --models "$models" --port "$port" --grpc-port $((port + 1)) --log warn &
server=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v2/health/ready" > /dev/null && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$port/api/v1/ml/models" |
    python3 -c 'import json,sys; [print(m["name"], "on", m["engine"]) for m in json.load(sys.stdin)["models"]]'
for engine in onnxruntime tract; do
    for spec in "1 1" "1 64" "64 4" "1024 4"; do
        set -- $spec
        echo "== cnn-$engine: batch $1, concurrency $2"
        "$aicp" bench --url "http://127.0.0.1:$port" --protocol v2-binary --model "cnn-$engine" \
            --batch "$1" --concurrency "$2" --duration "$seconds" --warmup 1 2>&1 | tail -n +2
    done
done
