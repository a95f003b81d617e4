#!/usr/bin/env bash
# The project's tests, in three lanes over one build (docs/DEVELOPMENT.md):
#
#   scripts/test.sh quick   unit and in-process tests: no Python, no apt, no npm, no server
#                           process; the tests `cargo test --workspace --release` runs
#   scripts/test.sh         the full lane, what CI runs: installs what the tests drive, then
#                           runs the quick lane's tests, the tests that need those tools, and
#                           the end-to-end tests of the real binary (crates/aicp-cli/tests/e2e)
#   scripts/test.sh slow    the slow lane, before a release and whenever the serving core
#                           changes: a minute's soak, replicas behind nginx, a long fuzz run,
#                           Fashion-MNIST, and a short run of the benchmark
#
# Tests run under cargo-nextest (installed from crates.io when missing), one process a test,
# with the profiles in .config/nextest.toml. Extra arguments go to `cargo nextest run`, for
# example a filter: `scripts/test.sh quick -E 'test(/grpc/)'`. Everything builds in the release
# profile, the build `cargo run --release` uses, so nothing is compiled twice. A tool a test
# needs is installed here; a test never skips for lack of one, it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

lane=full
case "${1:-}" in
    quick | full | slow)
        lane=$1
        shift
        ;;
esac
started=$(date +%s)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages, installed when missing.
debian() {
    local missing=() package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

# The reference tools (onnx checker, ONNX Runtime, Triton's and KServe's Python clients, the
# validators) in a virtualenv, at the versions scripts/test-requirements.txt pins.
virtualenv() {
    if [ ! -x .venv/bin/python ]; then
        echo "== creating .venv"
        python3 -m venv .venv
    fi
    # Reinstalled whenever the pinned list changes; kserve is checked on its own, since it
    # cannot be imported beside tritonclient.grpc.
    local stamp=.venv/test-requirements.txt
    if ! cmp -s scripts/test-requirements.txt "$stamp" \
        || ! .venv/bin/python -c "import onnx, onnxruntime, tract, numpy, tritonclient.http, tritonclient.grpc, nvidia.cuda_runtime, prometheus_client, kubernetes_validate, yaml, openapi_spec_validator, jsonschema" 2>/dev/null \
        || ! .venv/bin/python -c "import kserve" 2>/dev/null; then
        echo "== installing test requirements into .venv"
        .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
        cp scripts/test-requirements.txt "$stamp"
    fi
    export AICP_TEST_PYTHON="$PWD/.venv/bin/python"
}

# Triton's perf_analyzer, a third-party load client for the protocol tests. PyPI ships it only
# inside tritonclient's manylinux wheels up to the 2.5x releases; 2.50.0 is the newest whose
# binary runs on Debian 12 (glibc 2.36). It loads libcudart.so.12 (from the PyPI package
# nvidia-cuda-runtime-cu12, in the requirements) at start-up though it never uses a GPU here.
perf_analyzer() {
    if [ ! -x .venv/bin/perf_analyzer ]; then
        echo "== installing perf_analyzer from tritonclient 2.50.0's wheel"
        local wheels cudart
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
}

# ONNX models that PyPI packages ship inside their wheels, models nobody here wrote: RapidOCR's
# three PP-OCR models (text detector, recogniser, direction classifier) and Silero's voice
# activity detector. Only the wheels are fetched (--no-deps), and only their .onnx files kept.
wheel_models() {
    local dir=.venv/wheel-models
    if [ ! -f "$dir/silero_vad.onnx" ]; then
        echo "== unpacking ONNX models from rapidocr-onnxruntime's and silero-vad's wheels"
        local wheels
        wheels=$(mktemp -d)
        .venv/bin/pip download --quiet --disable-pip-version-check --no-deps -d "$wheels" \
            rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3
        .venv/bin/python - "$dir" "$wheels"/*.whl <<'PY'
import os, sys, zipfile
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
wanted = {"ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx",
          "ch_ppocr_mobile_v2.0_cls_infer.onnx", "silero_vad.onnx"}
for path in sys.argv[2:]:
    with zipfile.ZipFile(path) as wheel:
        for name in wheel.namelist():
            if os.path.basename(name) in wanted:
                with open(os.path.join(out, os.path.basename(name)), "wb") as f:
                    f.write(wheel.read(name))
PY
        rm -rf "$wheels"
    fi
    export AICP_WHEEL_MODELS="$PWD/$dir"
}

# playwright-core drives Chromium for the page's browser test. Playwright's own browser
# download cannot work here; the test uses Debian's /usr/bin/chromium.
playwright() {
    local package=.venv/node/node_modules/playwright-core
    if [ ! -f "$package/package.json" ]; then
        echo "== installing playwright-core into .venv/node"
        npm install --silent --no-audit --no-fund --prefix .venv/node playwright-core@1.65.1
    fi
    export AICP_PLAYWRIGHT_CORE="$PWD/$package"
    export AICP_CHROMIUM=/usr/bin/chromium
}

# cargo-nextest runs every lane; the machine usually has it, else it comes from crates.io.
# Every run selects the whole workspace: cargo unifies features over the packages a command
# selects, and selecting fewer would build half the tree again with other features.
nextest() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        echo "== installing cargo-nextest"
        cargo install --locked cargo-nextest@0.9.143
    fi
    cargo nextest run --release --locked --workspace "$@"
}

# Every test binary, the two that `cargo test` leaves out (test = false) included: a named
# integration test is built whatever its `test` flag says, and `--tests` would drop them.
every_target=(--lib --bins --test '*')
# Slow tests sit in modules named `slow` and are ignored, so only the slow lane runs them.
slow_tests='test(/(^|::)slow::/)'

case $lane in
    quick)
        nextest --profile quick "$@"
        ;;
    full)
        # libb64, which perf_analyzer links against; Chromium and Node.js for the browser test
        # of the page; curl, a client of the TLS test and of bench/soak.sh; openssl, which
        # makes certificates as the security page says (the TLS and documentation tests).
        debian libb64-0d chromium curl openssl
        # Node.js by command, not by package: a machine may have it from elsewhere (NodeSource).
        command -v node >/dev/null || debian nodejs
        command -v npm >/dev/null || debian npm
        virtualenv
        wheel_models
        perf_analyzer
        playwright
        # The quick lane's tests, the ones it leaves out for the tools above (ignored there),
        # and the two binaries only this lane builds: the end-to-end tests and the floor's.
        nextest --profile full "${every_target[@]}" --run-ignored all -E "not $slow_tests" "$@"
        ;;
    slow)
        # Fashion-MNIST, the full-size dataset; nginx, the load balancer of the replica test;
        # curl for bench/soak.sh and bench/run.sh.
        debian dataset-fashion-mnist nginx curl
        virtualenv
        nextest --profile slow "${every_target[@]}" --run-ignored only -E "$slow_tests" "$@"
        echo "== a long fuzz run"
        AICP_FUZZ_CASES=${AICP_FUZZ_CASES:-30000} nextest --profile slow \
            -E 'binary_id(aicp-server) & test(/^tests::fuzz::/)'
        echo "== the benchmark, a short run (bench/run.sh, 1 s levels; figures not checked)"
        BENCH_QUICK=1 bench/run.sh "${CARGO_TARGET_DIR:-target}/bench-smoke"
        ;;
esac
echo "== the $lane lane took $(($(date +%s) - started)) s"
