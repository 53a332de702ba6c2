#!/usr/bin/env bash
# A key-value set with and without ttl-ms, through wasmcloud:keyvalue (the
# WASIp3 example guest's PUT /wc/set/{key}[?ttl-ms=600000]), on every
# store: memory, the data directory with --fsync always, with --fsync
# every=100ms, and Redis (a redis-server started here on a free port, no
# persistence; skipped where redis-server is missing). One runner per store,
# the two kinds of set interleaved round by round; only successful responses
# count. The host-call level, with versioned swaps and prefix pages, is
# runner/benches/kv_features.rs.
#
#   bench/expiry.sh
#
# Settings (environment): ROUNDS (3), DURATION (3s), CONNECTIONS (16),
# PROFILE (dist; release, the quicker build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-16}
PROFILE=${PROFILE:-dist}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --profile "$PROFILE" --quiet -p runner --bin runner -p loadgen --bin loadgen
GUEST="$TARGET_DIR/guests/wasm32-wasip2/release/guest_p3.wasm"
[[ -f $GUEST ]] || cargo build --release --quiet -p runner # its build script builds the guests
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runner-expiry.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
source bench/lib.sh

# rate URL: successes per second of one loadgen run of PUTs.
rate() {
    "$TARGET_DIR/$PROFILE/loadgen" -m PUT -d value -c "$CONNECTIONS" --duration "$DURATION" \
        --warmup 1s --json "$WORK/report.json" "$1" >/dev/null
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["successes"]/r["elapsed_seconds"]))' \
        "$WORK/report.json"
}

STORES="memory always every"
if command -v redis-server >/dev/null; then
    REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis.log" &
    until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
    STORES="$STORES redis"
else
    echo "redis: skipped, redis-server is not on PATH"
fi

for store in $STORES; do
    rm -rf "$WORK/data"
    case $store in
    memory) extra=() ;;
    always) extra=(--data-dir "$WORK/data") ;;
    every) extra=(--data-dir "$WORK/data" --fsync every=100ms) ;;
    redis) extra=(--store "redis://127.0.0.1:$REDIS_PORT") ;;
    esac
    TENANTS=1 start_runner "$TARGET_DIR/$PROFILE/runner" --component "$GUEST" "${extra[@]}"
    for ((round = 1; round <= ROUNDS; round++)); do
        plain=$(rate "http://$ADDR/t/t0/wc/set/{key}")
        ttl=$(rate "http://$ADDR/t/t0/wc/set/{key}?ttl-ms=600000")
        echo "$store round $round: plain $plain/s ttl $ttl/s"
        echo "$store $plain $ttl" >>"$WORK/rates"
    done
    kill "$PID"
    wait "$PID" 2>/dev/null || true
done
python3 - "$WORK/rates" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    store, plain, ttl = line.split()
    rows.setdefault(store, []).append((float(plain), float(ttl)))
for store, pairs in rows.items():
    plain = statistics.median(p for p, _ in pairs)
    ttl = statistics.median(t for _, t in pairs)
    costs = [p / t for p, t in pairs]
    print(f"{store:7} plain {plain:8.0f}/s  ttl {ttl:8.0f}/s  a ttl set costs {plain / ttl:.2f}x "
          f"a plain one (rounds {min(costs):.2f}-{max(costs):.2f})")
PY
