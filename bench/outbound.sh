#!/usr/bin/env bash
# Outgoing HTTP, in one run: a guest route that fetches a small response
# from a loopback upstream and answers it (`/fetch?url=...` of the bench
# guest, built with Rust's default settings), on the runner (fresh and
# reused instances, pooled keep-alive connections per tenant) against
# `wasmtime serve` running the same component (its outgoing handler, a new
# connection per request, with and without instance reuse) and a native
# hyper proxy with a pooled client (runner/examples/native's /fetch).
#
#   bench/outbound.sh [WASMTIME]
#
# The upstream is the native example on its own port (`/t/up/hello`,
# `hello`). Everything else, settings included (ROUNDS, DURATION,
# CONNECTIONS, REUSE, PROFILE, BASELINE), is bench/reuse.sh's; only 2xx
# responses count.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-dist}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --profile "$PROFILE" --quiet -p runner --bin runner --example native
cargo build --release --quiet --target wasm32-wasip2 --manifest-path guest/Cargo.toml --locked -p guest-bench
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The upstream gets a core's worth of workers like the servers measured.
NATIVE_WORKERS=1 "$TARGET_DIR/$PROFILE/examples/native" "127.0.0.1:$port" >/dev/null &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT
for ((i = 0; i < 100; i++)); do
    curl -s -o /dev/null "http://127.0.0.1:$port/t/up/hello" && break
    sleep 0.1
done
export PATHS="/fetch?url=http://127.0.0.1:$port/t/up/hello"
export RUNNER_ARGS="--allowed-outbound-hosts http://127.0.0.1:$port --allowed-outbound-networks 127.0.0.0/8"
bench/reuse.sh guest/target/wasm32-wasip2/release/guest_bench.wasm "${1:-wasmtime}"
