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

# From Debian: Fashion-MNIST (the full-size dataset) for the dataset-loading tests; libb64,
# which perf_analyzer links against; Chromium and Node.js for the browser test of the page;
# nginx, the load balancer of the replica test; curl, a client of the TLS test.
missing=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
for package in libb64-0d chromium nginx curl; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
# Node.js by command, not by package: a machine may have it from elsewhere (NodeSource).
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# The reference tools (onnx checker, ONNX Runtime, Triton's Python clients) in a virtualenv.
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
# kserve is checked on its own: it cannot be imported beside tritonclient.grpc.
if ! .venv/bin/python -c "import onnx, onnxruntime, numpy, tritonclient.http, tritonclient.grpc, nvidia.cuda_runtime, prometheus_client, kubernetes_validate, yaml, openapi_spec_validator" 2>/dev/null \
    || ! .venv/bin/python -c "import kserve" 2>/dev/null; then
    echo "== installing test requirements into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
fi
export AICP_TEST_PYTHON="$PWD/.venv/bin/python"

# Triton's perf_analyzer, a third-party load client for the protocol tests. PyPI ships it only
# inside tritonclient's manylinux wheels up to the 2.5x releases; 2.50.0 is the newest whose
# binary runs on Debian 12 (glibc 2.36). It loads libcudart.so.12 (from the PyPI package
# nvidia-cuda-runtime-cu12, in the requirements) at start-up though it never uses a GPU here.
if [ ! -x .venv/bin/perf_analyzer ]; then
    echo "== installing perf_analyzer from tritonclient 2.50.0's wheel"
    wheels=$(mktemp -d)
    .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform manylinux1_x86_64 -d "$wheels" tritonclient==2.50.0
    .venv/bin/python - "$wheels"/tritonclient-2.50.0-*.whl <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    binary = wheel.read("tritonclient-2.50.0.data/data/bin/perf_analyzer")
os.makedirs(".venv/libexec", exist_ok=True)
with open(".venv/libexec/perf_analyzer", "wb") as out:
    out.write(binary)
os.chmod(".venv/libexec/perf_analyzer", 0o755)
PY
    rm -rf "$wheels"
    cudart=$(.venv/bin/python -c "import nvidia.cuda_runtime as c, os; print(os.path.join(list(c.__path__)[0], 'lib'))")
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
        "$cudart" "$PWD/.venv/libexec/perf_analyzer" > .venv/bin/perf_analyzer
    chmod +x .venv/bin/perf_analyzer
    .venv/bin/perf_analyzer --version
fi
export AICP_PERF_ANALYZER="$PWD/.venv/bin/perf_analyzer"

# playwright-core drives Chromium for the page's browser test. Playwright's own browser
# download cannot work here; the test uses Debian's /usr/bin/chromium.
playwright=.venv/node/node_modules/playwright-core
if [ ! -f "$playwright/package.json" ]; then
    echo "== installing playwright-core into .venv/node"
    npm install --silent --no-audit --no-fund --prefix .venv/node playwright-core@1.65.1
fi
export AICP_PLAYWRIGHT_CORE="$PWD/$playwright"
export AICP_CHROMIUM=/usr/bin/chromium

echo "== cargo test"
cargo test --release --workspace --locked --no-fail-fast "$@"
