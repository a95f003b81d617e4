#!/usr/bin/env bash
# The GPU checks, on a machine with an NVIDIA GPU: the CUDA engine against the CPU (`aicp gpu
# verify`), then its throughput (`aicp gpu bench`) next to PyTorch on the same GPU with the same
# weights (scripts/gpu_torch_bench.py), then the whole server. One line per figure; under three
# minutes on a fresh H200 (75 s of it compiling the kernels, which later runs read from the cache).
#
#   scripts/gpu-check.sh [AICP_BINARY]     # default: .gpu/aicp, else target/release/aicp
#
# The binary must be built with the `cuda` feature (the default). Such a machine needs no Rust:
# build one here and bring it along (see docs/guide/engines.md, "GPU"):
#
#   cargo build --release -p aicp-cli --no-default-features --features cuda
#   mkdir -p .gpu && strip -o .gpu/aicp target/release/aicp
#
# CUDA 13's libraries (cudart, nvrtc, cublas, cudnn) are taken from the `nvidia` wheels of the
# Python that has PyTorch (PYTHON, default python3), the driver's libcuda.so.1 from the system.
set -uo pipefail
cd "$(dirname "$0")/.."

aicp=${1:-}
if [ -z "$aicp" ]; then
    for candidate in .gpu/aicp target/release/aicp; do
        [ -x "$candidate" ] && { aicp=$candidate; break; }
    done
fi
[ -x "${aicp:-}" ] || { echo "no aicp binary: pass its path" >&2; exit 2; }
python=${PYTHON:-python3}

site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
libs=$(find "$site/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
for driver in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
    [ -e "$driver/libcuda.so.1" ] && libs="$libs:$driver"
done
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The compiled kernels: the first command compiles them, the next ones read them from here.
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/aicp-gpu-cache}
export AICP_LOG=${AICP_LOG:-warn}

failed=0
step() {
    echo "== $*"
    "$@" || { echo "== FAILED ($?): $*"; failed=$((failed + 1)); }
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
step timeout 150 "$aicp" gpu verify --models models
AICP_LOG=warn,aicp_engine=info step timeout 120 "$aicp" gpu bench --models models
step timeout 60 "$python" scripts/gpu_torch_bench.py models/mnist/1/model.onnx

# The whole server, GPU against CPU on the same machine, over gRPC: one sample from one client,
# then batches of 256 from 16 clients.
serve_bench() {
    local label=$1
    shift
    "$aicp" serve --models models --port 18000 --grpc-port 18001 "$@" >"/tmp/aicp-serve-$label.log" 2>&1 &
    local pid=$!
    "$python" - "$label" <<'PY' || { kill "$pid"; return 1; }
import json, sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen("http://127.0.0.1:18000/readyz", timeout=1)
        break
    except Exception:
        time.sleep(0.2)
model = json.load(urllib.request.urlopen("http://127.0.0.1:18000/api/v1/ml/models"))["models"][0]
print(f'serve {sys.argv[1]} engine={model["engine"]} device="{model["device"]}"', flush=True)
PY
    # Latency: one client sending one sample at a time; then throughput.
    timeout 30 "$aicp" bench --url http://127.0.0.1:18001 --protocol grpc --batch 1 \
        --concurrency 1 --duration 5 --warmup 1 &&
        timeout 30 "$aicp" bench --url http://127.0.0.1:18001 --protocol grpc --batch 256 \
            --concurrency 16 --duration 5 --warmup 1
    local status=$?
    kill "$pid"
    wait "$pid"
    return $status
}
# The batching defaults a CUDA-backed model gets: the GPU's (100 us queue delay, 2 instances,
# batches of 8192) when no flag is given, the flag's value when one is (`aicp serve` once passed
# its CPU default as if given, and GPU models never got theirs).
serve_config() {
    local expect_delay=$1 expect_instances=$2
    shift 2
    "$aicp" serve --models models --port 18000 --grpc-port 18001 "$@" >/tmp/aicp-serve-config.log 2>&1 &
    local pid=$!
    "$python" - "$expect_delay" "$expect_instances" <<'PY'
import json, sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen("http://127.0.0.1:18000/readyz", timeout=1)
        break
    except Exception:
        time.sleep(0.2)
config = json.load(urllib.request.urlopen("http://127.0.0.1:18000/v2/models/mnist/config"))
delay = config["dynamic_batching"]["max_queue_delay_microseconds"]
instances = config["instance_group"][0]["count"]
print(f'config kind={config["instance_group"][0]["kind"]} max_batch_size={config["max_batch_size"]} '
      f'max_queue_delay_us={delay} instances={instances}', flush=True)
assert config["instance_group"][0]["kind"] == "KIND_GPU", config
assert delay == int(sys.argv[1]) and instances == int(sys.argv[2]), config
PY
    local status=$?
    kill "$pid"
    wait "$pid"
    return $status
}
step serve_config 100 2
step serve_config 7 1 --max-queue-delay-us 7 --instances 1
step serve_bench gpu
step serve_bench gpu-only --gpu-min-batch 1
step serve_bench cpu --gpu off
echo "== $failed step(s) failed"
exit $((failed > 0))
