#!/usr/bin/env bash
# A soak run: `aicp serve` on a copy of the bundled models, driven by `aicp soak` over every
# protocol at once (the ML API with numbers and pictures, V2 REST with JSON and binary tensors,
# gRPC unary and streamed), bad requests mixed in, and a copy of the model rewritten every five
# seconds so that it reloads under load. Prints every request kind's answers and the server's
# resident memory over time; fails if any request got an answer it should not have.
#
# Usage: bench/soak.sh [SECONDS] [REPORT.json]     (default: 600 seconds, no JSON)
# Environment: AICP_BIN, the aicp binary to run (default: built here, release);
# SOAK_CONCURRENCY, requests in flight (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
report=${2:-}
if [ -z "${AICP_BIN:-}" ]; then
    cargo build --release --locked --workspace --bins
    AICP_BIN=${CARGO_TARGET_DIR:-target}/release/aicp
fi

work=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/models"
cp -r models/mnist "$work/models/mnist"
cp -r models/mnist "$work/models/mnist-reload"
"$AICP_BIN" serve --port 0 --grpc-port 0 --models "$work/models" --poll-interval-ms 500 \
    > "$work/stdout" 2> "$work/stderr" &
server=$!

# Where it listens, then readiness, each within a minute.
for _ in $(seq 600); do
    grep -q "^aicp gRPC listening on" "$work/stdout" 2>/dev/null && break
    sleep 0.1
done
http=$(sed -n 's/^aicp listening on //p' "$work/stdout")
grpc=$(sed -n 's/^aicp gRPC listening on //p' "$work/stdout")
[ -n "$http" ] && [ -n "$grpc" ] || { cat "$work/stderr" >&2; echo "the server did not start" >&2; exit 1; }
for _ in $(seq 600); do
    curl -sf "$http/readyz" > /dev/null && break
    sleep 0.1
done
curl -sf "$http/readyz" > /dev/null || { cat "$work/stderr" >&2; echo "the server never became ready" >&2; exit 1; }

args=(--url "$http" --grpc "http://$grpc" --reload "$work/models/mnist-reload"
      --duration "$seconds" --concurrency "${SOAK_CONCURRENCY:-8}" --server-pid "$server")
[ -n "$report" ] && args+=(--json "$report")
"$AICP_BIN" soak "${args[@]}"
