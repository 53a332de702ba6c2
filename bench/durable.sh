#!/usr/bin/env bash
# Throughput of the key-value store with and without a data directory, in
# interleaved rounds (memory, always, every, memory, ...), so that drift on a
# noisy host hits every mode alike.
#
#   bench/durable.sh [RUNNER]
#
# Modes: memory (no --data-dir), always (--fsync always), every
# (--fsync every=100ms); each round starts the runner with `--tenants 100` on
# a fresh data directory, fills 100 tenants x 100 keys, then runs:
#   mix      get=80,set=20, 32 connections
#   read     get=100, 32 connections
#   write    set=100, 32 connections
#   write1   set=100, 1 connection (what group commit is measured against)
# 100-byte values. Prints every round's req/s and p99, then per workload each
# mode's median and its ratio to memory with the per-round min-max, and for
# each mode write/write1 (acknowledged writes per second of 32 writers over
# one).
#
# Settings (environment): ROUNDS (3), DURATION (8s), DATA (a directory on the
# disk to measure; default under $TMPDIR).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNER=${1:-${CARGO_TARGET_DIR:-target}/release/runner}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
LOADGEN=${CARGO_TARGET_DIR:-target}/release/loadgen
[[ -x $LOADGEN ]] || cargo build --release --quiet -p loadgen
WORK=$(mktemp -d "${DATA:-${TMPDIR:-/tmp}}/runner-durable.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
source bench/lib.sh

run_round() { # MODE ROUND
    local store=()
    case $1 in
        always) store=(--data-dir "$WORK/data-$2" --fsync always) ;;
        every) store=(--data-dir "$WORK/data-$2" --fsync every=100ms) ;;
    esac
    start_runner "$RUNNER" "${store[@]}"
    local pid=$PID
    local common=(--target "http://$ADDR" --tenants 100 --keys 100 --value-size 100 --threads 1)
    "$LOADGEN" "${common[@]}" --concurrency 32 --mix set=100 --requests 20000 --warmup 0s >/dev/null
    for workload in mix read write write1; do
        local mix conns=32
        case $workload in
            mix) mix=get=80,set=20 ;;
            read) mix=get=100 ;;
            write) mix=set=100 ;;
            write1) mix=set=100 conns=1 ;;
        esac
        "$LOADGEN" "${common[@]}" --concurrency "$conns" --mix "$mix" --duration "$DURATION" \
            --warmup 1s --json "$WORK/r.json" >/dev/null
        jq -r --arg m "$1" --arg w "$workload" --arg r "$2" \
            '[$m, $w, $r, (.achieved_rate | floor), (.latency.p99_us / 1000), .errors] | @tsv' \
            "$WORK/r.json" | tee -a "$WORK/results.tsv"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$WORK/data-$2"
}

printf 'mode\tworkload\tround\treq/s\tp99 ms\terrors\n'
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in memory always every; do
        run_round "$mode" "$round"
    done
done
echo
awk -F'\t' '
    { rps[$1, $2, $3] = $4; rounds[$3] = 1 }
    function median(m, w,    n, v, r, i, j, t) {
        n = 0
        for (r in rounds) v[++n] = rps[m, w, r]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function spread(m, w, base, ws,    lo, hi, r, q) {
        lo = 1e9; hi = 0
        for (r in rounds) { q = rps[m, w, r] / rps[base, ws, r]; if (q < lo) lo = q; if (q > hi) hi = q }
        return sprintf("%.3f-%.3f", lo, hi)
    }
    END {
        split("mix read write write1", ws, " "); split("memory always every", ms, " ")
        printf "workload\tmode\tmedian req/s\tvs memory\tper-round (min-max)\n"
        for (i = 1; i <= 4; i++) for (j = 1; j <= 3; j++) {
            w = ws[i]; m = ms[j]
            printf "%s\t%s\t%d\t%.3f\t%s\n", w, m, median(m, w), median(m, w) / median("memory", w), spread(m, w, "memory", w)
        }
        printf "\nmode\twrite/write1 (32 writers over 1)\tper-round (min-max)\n"
        for (j = 1; j <= 3; j++) { m = ms[j]; printf "%s\t%.2f\t%s\n", m, median(m, "write") / median(m, "write1"), spread(m, "write", m, "write1") }
    }' "$WORK/results.tsv"
