#!/usr/bin/env bash
# aicp's benchmark, on one machine, in one run, every figure next to its baseline:
#
#   1. in-process engine throughput on the bundled MNIST MLP (batch 1 and 1024, one thread):
#      aicp's engines against the onnxruntime Python package;
#   2. the dynamic batcher in process: 64 concurrent submitters, batching off against on;
#   2a. a chain's own cost in process, one request at a time: a chain of two steps against its
#      steps run one after the other (crates/aicp-runtime/benches/chain.rs);
#   2b. preparing a picture in process: a 640x480 JPEG made an ImageNet input by aicp's
#      `[preprocess.image]` (crates/aicp-transform/benches/prepare.rs) against PIL and
#      torchvision's transforms (bench/preprocess_python.py; PIL and numpy doing torchvision's
#      steps where torchvision, which needs torch, is not installed);
#   3. the server, measured by `aicp bench` from this machine (3a' and 3c: text embeddings,
#      aicp's /api/v1/ml/embed against FastAPI + tokenizers + onnxruntime, bench/embed_server.py,
#      64 requests of one sentence outstanding, on the transformers BERT export of the tests):
#      - the BASELINE, FastAPI + onnxruntime (bench/baseline_server.py), one uvicorn worker per
#        core, at concurrency 1 and 64;
#      - `aicp serve` with dynamic batching off, then on, /api/v1/ml/classify at 1 and 64, and
#        two models heavy enough for the engine to be the bottleneck, the bundled CNN and a
#        wide MLP (bench/wide_mlp.py), with V2 binary tensors at 64;
#      - `aicp serve` (batching on): V2 JSON and V2 binary tensors at 64, gRPC at 1 and 64;
#   4. THE FLOOR (bench/floor: bare axum and tonic servers that parse the same requests and
#      answer fixed ones, no model), the floor running the model (the same servers running each
#      request through ONNX Runtime inline, `--model`) and `aicp serve`, classify, V2 binary and
#      gRPC at 1 and 64. On a machine with two cores or more, the server under test is pinned
#      to core 0 and the load tool to core 1 (taskset), so neither competes with the other for a
#      core; the three servers take turns for BENCH_ROUNDS rounds (default 3), and each figure
#      is the best of its rounds, which is what the machine can do when nothing else disturbs it;
#   5. with BENCH_BEFORE=PATH (an `aicp` binary built from an earlier commit): before and after,
#      the two binaries serving the bundled models in turn, pinned as in 4, for BENCH_ROUNDS
#      rounds: classify, V2 binary and gRPC at 1 and 64 on the MLP, V2 binary at 64 on the CNN;
#   6. a report of the ratios (bench/report.py), also written to OUT/summary.md.
#
# Usage: bench/run.sh [OUT]   (default OUT: target/bench/<date>)
# Environment: BENCH_SECONDS (per level, default 5), BENCH_ROUNDS (floor rounds, default 3),
# BENCH_BEFORE (an earlier aicp binary, for section 5),
# BENCH_QUICK=1 (short criterion runs, 1 s levels, one round: checks that everything runs,
# figures too noisy to quote).
# Servers run one at a time on ports 18400-18403 of 127.0.0.1; nothing else should load the
# machine meanwhile (the figures are ratios within this run, but a busy machine adds noise).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
seconds=${BENCH_SECONDS:-5}
rounds=${BENCH_ROUNDS:-3}
criterion=(--warm-up-time 2 --measurement-time 5)
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    seconds=1
    rounds=1
    criterion=(--warm-up-time 0.2 --measurement-time 0.5)
fi
cores=$(nproc)
model=models/mnist/1/model.onnx

echo "== Python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt

# Every cargo command here selects the whole workspace, as scripts/test.sh does: cargo unifies
# features over the packages a command selects, and selecting fewer would rebuild burn and half
# the tree with other features. The targets are the full test lane's, whose end-to-end tests
# need the two binaries: the build scripts/test.sh made is reused as it is.
echo "== building"
cargo test --release --locked --workspace --no-run --lib --bins --test '*'
aicp=${CARGO_TARGET_DIR:-target}/release/aicp
floor=${CARGO_TARGET_DIR:-target}/release/aicp-floor

echo "== 1. in-process engines (aicp) and the onnxruntime Python package"
AICP_BENCH_JSON="$out/engines.json" cargo bench --locked --workspace --bench engines -- "${criterion[@]}" \
    | grep -E "^batch|time:|thrpt:" || true
.venv/bin/python bench/onnxruntime_engine.py "$model" "$out/python_onnxruntime.json"

echo "== 2. the dynamic batcher in process"
AICP_BENCH_JSON="$out/scheduler.json" cargo bench --locked --workspace --bench scheduler -- "${criterion[@]}" \
    | grep -E "submitters|time:|thrpt:" || true

echo "== 2a. a chain's own cost in process: a chain of two steps against the steps"
AICP_BENCH_JSON="$out/chain.json" cargo bench --locked --workspace --bench chain -- "${criterion[@]}" \
    | grep -E "^chain|time:|own cost" || true

echo "== 2b. preparing a picture in process: aicp against PIL and torchvision"
AICP_BENCH_JSON="$out/prepare.json" AICP_BENCH_JPEG_OUT="$out/picture.jpg" \
    cargo bench --locked --workspace --bench prepare -- "${criterion[@]}" \
    | grep -E "^prepare|time:" || true
.venv/bin/python bench/preprocess_python.py "$out/picture.jpg" > "$out/python_prepare.json"

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
# The served models: the bundled ones and the wide MLP.
models=$(mktemp -d)
trap 'stop_all; rm -rf "$models"' EXIT
cp -r models/mnist models/mnist-cnn "$models/"
.venv/bin/python bench/wide_mlp.py "$models/wide-mlp"
# The text encoder of the embedding figures (the transformers BERT export the tests serve),
# with a WordPiece tokenizer.json trained on Python's own documentation, as the tests make it.
.venv/bin/python - "$models/encoder" <<'PY'
import shutil, sys
from pathlib import Path
sys.path.insert(0, "crates/aicp-cli/tests/fixtures")
import preprocess
encoder = Path(sys.argv[1])
(encoder / "1").mkdir(parents=True)
shutil.copy("crates/aicp-cli/tests/fixtures/exported/text_encoder.onnx", encoder / "1/model.onnx")
# Texts of about the same length share a shape, so the batcher can merge their requests.
(encoder / "model.toml").write_text(
    preprocess.ENCODER_TOML.replace("max_length = 128\n", "max_length = 128\npad_to_multiple_of = 16\n"))
preprocess.train_tokenizer(preprocess.sentences()[1]).save(str(encoder / "tokenizer.json"))
PY

# wait_ready URL: polls until the URL answers 200, for at most 60 s.
wait_ready() {
    for _ in $(seq 600); do
        if .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

# load NAME PROTOCOL URL CONCURRENCY [ARGS...]: one `aicp bench` sweep, its JSON in
# OUT/NAME.json; $client runs it (empty, or taskset for the floor comparison).
client=()
load() {
    local name=$1 protocol=$2 url=$3 concurrency=$4
    shift 4
    "${client[@]}" "$aicp" bench --url "$url" --protocol "$protocol" --concurrency "$concurrency" \
        --duration "$seconds" --warmup 1 --json "$out/$name.json" "$@"
}

echo "== 3a. BASELINE: FastAPI + onnxruntime, $cores uvicorn workers"
AICP_BASELINE_MODEL=$model .venv/bin/uvicorn bench.baseline_server:app --workers "$cores" \
    --host 127.0.0.1 --port 18400 --log-level warning &
pids+=($!)
# The classify route answers a GET with 405: the server is up.
wait_ready http://127.0.0.1:18400/openapi.json
load baseline classify http://127.0.0.1:18400 1,64
stop_all

echo "== 3a'. BASELINE for /embed: FastAPI + tokenizers + onnxruntime, $cores uvicorn workers"
AICP_EMBED_MODEL_DIR="$models/encoder" .venv/bin/uvicorn bench.embed_server:app \
    --workers "$cores" --host 127.0.0.1 --port 18400 --log-level warning &
pids+=($!)
wait_ready http://127.0.0.1:18400/openapi.json
load baseline_embed embed http://127.0.0.1:18400 64
stop_all

echo "== 3b. aicp serve, dynamic batching off"
"$aicp" serve --models "$models" --port 18401 --grpc-port 18402 --dynamic-batching false >/dev/null &
pids+=($!)
wait_ready http://127.0.0.1:18401/readyz
load aicp_batching_off classify http://127.0.0.1:18401 1,64
load aicp_cnn_batching_off v2-binary http://127.0.0.1:18401 64 --model mnist-cnn
load aicp_wide_batching_off v2-binary http://127.0.0.1:18401 64 --model wide-mlp
stop_all

echo "== 3c. aicp serve, dynamic batching on (the default)"
"$aicp" serve --models "$models" --port 18401 --grpc-port 18402 >/dev/null &
pids+=($!)
wait_ready http://127.0.0.1:18401/readyz
load aicp_batching_on classify http://127.0.0.1:18401 1,64
load aicp_cnn_batching_on v2-binary http://127.0.0.1:18401 64 --model mnist-cnn
load aicp_wide_batching_on v2-binary http://127.0.0.1:18401 64 --model wide-mlp
load aicp_v2_json v2-json http://127.0.0.1:18401 64
load aicp_v2_binary v2-binary http://127.0.0.1:18401 64
load aicp_grpc grpc http://127.0.0.1:18402 1,64
load aicp_embed embed http://127.0.0.1:18401 64 --model encoder
stop_all

echo "== 4. THE FLOOR against aicp serve, $rounds rounds"
server_cpu=()
if [ "$cores" -ge 2 ]; then
    server_cpu=(taskset -c 0)
    client=(taskset -c 1)
    echo "(server pinned to core 0, load tool to core 1)"
fi
echo "{\"pinned\": ${#server_cpu[@]}, \"rounds\": $rounds}" > "$out/floor_setup.json"
# The onnxruntime package's library, for the floor running the model.
ort_lib=$(.venv/bin/python -c "import glob, os, onnxruntime as o; \
print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), 'capi', 'libonnxruntime.so.1*')))[-1])")
# floor_round NAME READY SERVER...: starts SERVER on 18401 (HTTP) and 18402 (gRPC) and loads
# it with classify, V2 binary and gRPC at 1 and 64, into OUT/NAME_<protocol>_<round>.json.
floor_round() {
    local name=$1 ready=$2
    shift 2
    "${server_cpu[@]}" "$@" >/dev/null &
    pids+=($!)
    wait_ready "$ready"
    load "${name}_classify_$round" classify http://127.0.0.1:18401 1,64
    load "${name}_v2_binary_$round" v2-binary http://127.0.0.1:18401 1,64
    load "${name}_grpc_$round" grpc http://127.0.0.1:18402 1,64
    stop_all
}
for round in $(seq "$rounds"); do
    floor_round floor http://127.0.0.1:18401/v2/models/mnist \
        "$floor" --http-port 18401 --grpc-port 18402
    floor_round floor_model http://127.0.0.1:18401/v2/models/mnist \
        "$floor" --http-port 18401 --grpc-port 18402 --model "$model" --ort-lib "$ort_lib"
    floor_round pinned http://127.0.0.1:18401/readyz \
        "$aicp" serve --port 18401 --grpc-port 18402
done

if [ -n "${BENCH_BEFORE:-}" ]; then
    echo "== 5. before ($BENCH_BEFORE) and after ($aicp), $rounds rounds"
    # version_round NAME BINARY: the bundled models served by BINARY, loaded as the floor
    # rounds load aicp, and the CNN with V2 binary tensors at 64.
    version_round() {
        local name=$1 binary=$2
        "${server_cpu[@]}" "$binary" serve --port 18401 --grpc-port 18402 >/dev/null &
        pids+=($!)
        wait_ready http://127.0.0.1:18401/readyz
        load "${name}_classify_$round" classify http://127.0.0.1:18401 1,64
        load "${name}_v2_binary_$round" v2-binary http://127.0.0.1:18401 1,64
        load "${name}_grpc_$round" grpc http://127.0.0.1:18402 1,64
        load "${name}_cnn_$round" v2-binary http://127.0.0.1:18401 64 --model mnist-cnn
        stop_all
    }
    for round in $(seq "$rounds"); do
        version_round before "$BENCH_BEFORE"
        version_round after "$aicp"
    done
fi
client=()

echo "== 6. report"
.venv/bin/python bench/report.py "$out" | tee "$out/summary.md"
