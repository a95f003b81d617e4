#!/usr/bin/env bash
# The project's test suite, as CI runs it: installs what the tests drive, then runs every test.
#
#   scripts/test.sh                 # all tests
#   scripts/test.sh -p aicp-train   # extra arguments go to `cargo test`
#
# Tests run in the release profile: the same build as `cargo run --release`, and training in the
# tests runs at full speed. A tool the tests need is installed here; a test never skips for lack
# of one, it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Fashion-MNIST (the full-size dataset) from Debian, for the dataset-loading tests.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    echo "== installing Debian's dataset-fashion-mnist"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi

# The reference ONNX tools (onnx checker, ONNX Runtime) in a project virtualenv.
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import onnx, onnxruntime, numpy" 2>/dev/null; then
    echo "== installing test requirements into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
fi
export AICP_TEST_PYTHON="$PWD/.venv/bin/python"

echo "== cargo test"
cargo test --release --workspace --locked --no-fail-fast "$@"
