#!/usr/bin/env bash
# The key-value store on Redis against in memory, through one runner and
# through two, in interleaved rounds (memory-1, redis-1, memory-2, redis-2,
# then again), so drift on a noisy host hits every mode alike.
#
#   bench/fleet.sh [RUNNER]
#
# Modes: memory-N is N runners, each with its own in-memory store; redis-N
# is N runners sharing one redis-server (started here on a free port, no
# persistence). loadgen spreads its connections' requests over the N
# runners (several --target URLs). Each round fills 100 tenants x 100 keys,
# then runs get=80,set=20 with 32 connections and 100-byte values.
#
# Prints every round's req/s and p99, then per mode the median and its ratio
# to memory-1 with the per-round min-max; and for the redis modes, where a
# key-value call's time goes: the host's mean per call
# (runner_kv_operation_duration_seconds, by op), against the time Redis
# itself spent per command (INFO commandstats: EVALSHA for a set, GET for a
# get); the rest is the round trip, the client and the queueing.
#
# Settings (environment): ROUNDS (3), DURATION (8s).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNER=${1:-${CARGO_TARGET_DIR:-target}/release/runner}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
LOADGEN=${CARGO_TARGET_DIR:-target}/release/loadgen
[[ -x $LOADGEN ]] || cargo build --release --quiet -p loadgen
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runner-fleet.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
source bench/lib.sh

REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis.log" &
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

# snapshot NAME ADMIN...: each runner's /metrics into $WORK/NAME.<index>.
snapshot() {
    local name=$1 k=0
    shift
    rm -f "$WORK/$name".*
    for a in "$@"; do
        curl -s "http://$a/metrics" >"$WORK/$name.$k"
        k=$((k + 1))
    done
}

run_round() { # MODE ROUND
    local n=${1#*-} store=() targets=() pids=() admins=()
    [[ $1 == redis-* ]] && store=(--store "redis://127.0.0.1:$REDIS_PORT")
    rcli flushall >/dev/null
    for ((i = 0; i < n; i++)); do
        start_runner "$RUNNER" "${store[@]}"
        pids+=("$PID") admins+=("$ADMIN") targets+=("http://$ADDR")
    done
    local target
    target=$(IFS=,; echo "${targets[*]}")
    local common=(--target "$target" --tenants 100 --keys 100 --value-size 100 --threads 1)
    "$LOADGEN" "${common[@]}" --concurrency 32 --mix set=100 --requests 20000 --warmup 0s >/dev/null
    # Counted from here: the measured run only (its warm-up included).
    rcli config resetstat >/dev/null
    snapshot b "${admins[@]}"
    "$LOADGEN" "${common[@]}" --concurrency 32 --mix get=80,set=20 --duration "$DURATION" \
        --warmup 1s --json "$WORK/r.json" >/dev/null
    jq -r --arg m "$1" --arg r "$2" \
        '[$m, $r, (.achieved_rate | floor), (.latency.p99_us / 1000), .errors] | @tsv' \
        "$WORK/r.json" | tee -a "$WORK/results.tsv"
    if [[ $1 == redis-* ]]; then
        # The host's time per call over this run: (sum, count) after minus
        # before, over every runner.
        snapshot a "${admins[@]}"
        awk -v mode="$1" -v round="$2" '
            /^runner_kv_operation_duration_seconds_(sum|count)\{/ {
                sign = FILENAME ~ /\/b\.[0-9]+$/ ? -1 : 1
                match($0, /op="[a-z_]+"/); op = substr($0, RSTART + 4, RLENGTH - 5)
                if ($0 ~ /_sum\{/) s[op] += sign * $2; else c[op] += sign * $2
            }
            END { for (op in c) if ((op == "get" || op == "set") && c[op] > 0) printf "%s\t%s\thost\t%s\t%.1f\n", mode, round, op, s[op] / c[op] * 1e6 }
        ' "$WORK"/b.* "$WORK"/a.* >>"$WORK/calls.tsv"
        rcli info commandstats | tr -d '\r' | awk -F'[:,=]' -v mode="$1" -v round="$2" '
            /^cmdstat_(get|evalsha)/ { printf "%s\t%s\tredis\t%s\t%s\n", mode, round, $1, $7 }
        ' >>"$WORK/calls.tsv"
    fi
    for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
}

printf 'mode\tround\treq/s\tp99 ms\terrors\n'
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in memory-1 redis-1 memory-2 redis-2; do
        run_round "$mode" "$round"
    done
done
echo
awk -F'\t' '
    { rps[$1, $2] = $3; rounds[$2] = 1 }
    function median(m,    n, v, r, i, j, t) {
        n = 0
        for (r in rounds) v[++n] = rps[m, r]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function spread(m,    lo, hi, r, q) {
        lo = 1e9; hi = 0
        for (r in rounds) { q = rps[m, r] / rps["memory-1", r]; if (q < lo) lo = q; if (q > hi) hi = q }
        return sprintf("%.3f-%.3f", lo, hi)
    }
    END {
        split("memory-1 redis-1 memory-2 redis-2", ms, " ")
        printf "mode\tmedian req/s\tvs memory-1\tper-round (min-max)\n"
        for (j = 1; j <= 4; j++) printf "%s\t%d\t%.3f\t%s\n", ms[j], median(ms[j]), median(ms[j]) / median("memory-1"), spread(ms[j])
    }' "$WORK/results.tsv"
echo
printf 'mode\tround\twhere\tcall\tmicroseconds per call\n'
sort "$WORK/calls.tsv"
