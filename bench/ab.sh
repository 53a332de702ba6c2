#!/usr/bin/env bash
# A/B throughput of two runner binaries on the same machine, in interleaved
# rounds (A, B, A, B, ...), so that drift on a noisy host hits both alike.
#
#   bench/ab.sh OLD_RUNNER NEW_RUNNER
#
# Each round starts the binary with `--tenants 100` (the embedded default
# guest), drives it with target/release/loadgen (one load thread, 32
# connections) for each workload, and stops it:
#   hello   GET /t/{tenant}/hello over 100 tenants
#   mix     get=80,set=20 over 100 tenants x 100 keys, 100-byte values
# Prints every round's req/s and p99, then per workload the median of each
# binary and the ratio B/A of the medians, with the min-max of the per-round
# ratios.
#
# Settings (environment): AB_ROUNDS (3), AB_DURATION (8s), AB_ARGS (more
# runner flags for both, e.g. `--component PATH` to serve another guest).
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?usage: bench/ab.sh OLD_RUNNER NEW_RUNNER}
B=${2:?usage: bench/ab.sh OLD_RUNNER NEW_RUNNER}
ROUNDS=${AB_ROUNDS:-3}
DURATION=${AB_DURATION:-8s}
LOADGEN=${CARGO_TARGET_DIR:-target}/release/loadgen
[[ -x $LOADGEN ]] || cargo build --release --quiet -p loadgen
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runner-ab.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
source bench/lib.sh

run_round() { # BIN LABEL ROUND
    # shellcheck disable=SC2086 # AB_ARGS is a list of flags
    start_runner "$1" ${AB_ARGS:-}
    local pid=$PID
    local common=(--target "http://$ADDR" --tenants 100 --keys 100 --value-size 100
        --concurrency 32 --threads 1)
    "$LOADGEN" "${common[@]}" --mix set=100 --requests 30000 --warmup 0s >/dev/null
    for workload in hello mix; do
        local mix=hello=100
        [[ $workload == mix ]] && mix=get=80,set=20
        "$LOADGEN" "${common[@]}" --mix "$mix" --duration "$DURATION" --warmup 1s \
            --json "$WORK/r.json" >/dev/null
        jq -r --arg l "$2" --arg w "$workload" --arg r "$3" \
            '[$l, $w, $r, (.achieved_rate | floor), (.latency.p99_us / 1000), .errors] | @tsv' \
            "$WORK/r.json" | tee -a "$WORK/results.tsv"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

printf 'binary\tworkload\tround\treq/s\tp99 ms\terrors\n'
for ((round = 1; round <= ROUNDS; round++)); do
    run_round "$A" A "$round"
    run_round "$B" B "$round"
done
echo
awk -F'\t' '
    { rps[$2, $1, $3] = $4; workloads[$2] = 1; rounds[$3] = 1 }
    function median(w, b,    n, v, r, i, j, t) {
        n = 0
        for (r in rounds) v[++n] = rps[w, b, r]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    END {
        printf "workload\tA median\tB median\tB/A\tper-round B/A (min-max)\n"
        for (w in workloads) {
            lo = 1e9; hi = 0
            for (r in rounds) { q = rps[w, "B", r] / rps[w, "A", r]; if (q < lo) lo = q; if (q > hi) hi = q }
            a = median(w, "A"); b = median(w, "B")
            printf "%s\t%d\t%d\t%.3f\t%.3f-%.3f\n", w, a, b, b / a, lo, hi
        }
    }' "$WORK/results.tsv"
