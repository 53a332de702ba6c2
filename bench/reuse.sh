#!/usr/bin/env bash
# Instance reuse, in one run: the runner with a fresh instance per request
# and with --max-instance-reuse, against `wasmtime serve` at its best
# settings for each mode and the native baseline, on the same component.
#
#   bench/reuse.sh COMPONENT.wasm [WASMTIME]
#
# Servers, interleaved round by round so that drift hits all alike:
#   runner          runner --tenants 1 --component C (fresh instances)
#   runner-reuse    the same with --max-instance-reuse $REUSE
#   wasmtime        wasmtime serve -S cli -S keyvalue, pooling with memory,
#                   tables and stacks kept resident as the runner keeps them,
#                   PAGEMAP_SCAN, fuel and a 1s timeout (the runner's limits)
#   wasmtime-reuse  the same with --max-instance-reuse-count $REUSE
#   native          runner/examples/native (same routes, no wasm)
# and, for WASIp3 components, requests sharing an instance:
#   runner-concurrent    runner-reuse plus --max-instance-concurrency $CONCURRENCY
#   wasmtime-concurrent  wasmtime-reuse plus
#                        --max-instance-concurrent-reuse-count $CONCURRENCY
#                        (wasmtime serve's own default for WASIp3)
# `wasmtime` and `wasmtime-reuse` pass --max-instance-concurrent-reuse-count
# 1, so that on a WASIp3 component they serve one request at a time per
# instance, as the runner's do. `wasmtime serve`'s fuel is the instance's,
# not each request's, so a reusing `wasmtime serve` gets the runner's
# per-request budget times $REUSE (with only the budget it would trap
# instances of a guest that burns a lot per request, such as JavaScript).
# Responses other than 2xx are counted (wrk's "Non-2xx") and shown: a
# server answering errors fast does not pass for a fast one.
# Each does `wrk -t1 -c$CONNECTIONS -d$DURATION` on each path in PATHS (the
# runner's get /t/t0 in front). Prints every round, then the median req/s of
# each server and path and its ratio to $BASELINE, with the min-max of the
# per-round ratios.
#
# Settings (environment): RUNNER_ARGS (more runner flags, space-separated),
# WASMTIME_ARGS (more `wasmtime serve` flags), ROUNDS (3), DURATION (5s), CONNECTIONS (32),
# REUSE (128), CONCURRENCY (16), PATHS ("/hello /setget/k"), NATIVE (1; 0
# leaves it out, for guests whose routes it does not have), SERVERS (the
# first five, space-separated), BASELINE (wasmtime-reuse), PROFILE (the
# Cargo profile the runner and native are built with: dist, the build to
# deploy, or release, the quicker one the tests use; default dist).
set -euo pipefail
cd "$(dirname "$0")/.."
COMPONENT=${1:?usage: bench/reuse.sh COMPONENT.wasm [WASMTIME]}
WASMTIME=${2:-wasmtime}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
REUSE=${REUSE:-128}
CONCURRENCY=${CONCURRENCY:-16}
BASELINE=${BASELINE:-wasmtime-reuse}
PATHS=${PATHS:-/hello /setget/k}
SERVERS=${SERVERS:-runner runner-reuse wasmtime wasmtime-reuse native}
[[ ${NATIVE:-1} == 1 ]] || SERVERS=${SERVERS/native/}
PROFILE=${PROFILE:-dist}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --profile "$PROFILE" --quiet -p runner --bin runner --example native
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runner-reuse.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The limits the runner always applies, and its pool's kept-resident sizes.
WASMTIME_BEST=(-S cli -S keyvalue
    -O pooling-memory-keep-resident=2097152 -O pooling-table-keep-resident=65536
    -O pooling-async-stack-keep-resident=65536 -O pooling-pagemap-scan=y
    -W timeout=1s)
FUEL=100000000

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start SERVER: starts it in the background, waits until it accepts, sets
# PID and BASE (the URL a path is appended to).
start() {
    local port
    port=$(free_port)
    case $1 in
    runner | runner-reuse | runner-concurrent)
        local extra=()
        [[ $1 != runner ]] && extra=(--max-instance-reuse "$REUSE")
        [[ $1 == runner-concurrent ]] && extra+=(--max-instance-concurrency "$CONCURRENCY")
        "$TARGET_DIR/$PROFILE/runner" --tenants 1 --component "$COMPONENT" --log warn \
            --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 "${extra[@]}" ${RUNNER_ARGS:-} \
            >"$WORK/out" 2>&1 &
        BASE=http://127.0.0.1:$port/t/t0
        ;;
    wasmtime | wasmtime-reuse | wasmtime-concurrent)
        local extra=(--max-instance-reuse-count 1 --max-instance-concurrent-reuse-count 1
            -W fuel=$FUEL)
        [[ $1 == wasmtime-reuse ]] && extra=(--max-instance-reuse-count "$REUSE"
            --max-instance-concurrent-reuse-count 1 -W fuel=$((FUEL * REUSE)))
        [[ $1 == wasmtime-concurrent ]] && extra=(--max-instance-reuse-count "$REUSE"
            --max-instance-concurrent-reuse-count "$CONCURRENCY" -W fuel=$((FUEL * REUSE)))
        "$WASMTIME" serve "${WASMTIME_BEST[@]}" "${extra[@]}" ${WASMTIME_ARGS:-} --addr "127.0.0.1:$port" \
            "$COMPONENT" >"$WORK/out" 2>&1 &
        BASE=http://127.0.0.1:$port
        ;;
    native)
        "$TARGET_DIR/$PROFILE/examples/native" "127.0.0.1:$port" >"$WORK/out" 2>&1 &
        BASE=http://127.0.0.1:$port/t/t0
        ;;
    esac
    PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        curl -s -o /dev/null "$BASE/hello" && return 0
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/out" >&2; exit 1; }
        sleep 0.1
    done
    echo "$1 did not answer within 30 s" >&2
    cat "$WORK/out" >&2
    exit 1
}

printf 'server\tpath\tround\treq/s\tnon-2xx\n'
for ((round = 1; round <= ROUNDS; round++)); do
    for server in $SERVERS; do
        start "$server"
        for path in $PATHS; do
            # One second of warm-up, outside the measurement.
            wrk -t1 -c"$CONNECTIONS" -d1s "$BASE$path" >/dev/null
            wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "$BASE$path" >"$WORK/wrk"
            rps=$(awk '/^Requests\/sec/ { printf "%d", $2 }' "$WORK/wrk")
            errors=$(awk '/Non-2xx/ { n = $NF } END { print n + 0 }' "$WORK/wrk")
            status=$(curl -s -o /dev/null -w '%{http_code}' "$BASE$path")
            [[ $status == 200 ]] || echo "warning: $server $path answers $status" >&2
            printf '%s\t%s\t%s\t%s\t%s\n' "$server" "$path" "$round" "$rps" "$errors" |
                tee -a "$WORK/results.tsv"
        done
        kill "$PID"
        wait "$PID" 2>/dev/null || true
    done
done
echo
awk -F'\t' -v servers="$SERVERS" -v baseline="$BASELINE" '
    { rps[$1, $2, $3] = $4; errors[$1, $2] += $5; paths[$2] = 1; rounds[$3] = 1 }
    function median(a, n,    i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
        ns = split(servers, list, " ")
        printf "server\tpath\tmedian req/s\tvs %s (median)\tper-round min-max\tnon-2xx\n", baseline
        for (p in paths) for (k = 1; k <= ns; k++) {
            s = list[k]; n = 0; m = 0; lo = ""; hi = ""
            for (r in rounds) {
                v[++n] = rps[s, p, r]
                base = rps[baseline, p, r]
                if (base > 0) {
                    q = rps[s, p, r] / base
                    if (lo == "" || q < lo) lo = q
                    if (hi == "" || q > hi) hi = q
                    b[++m] = base
                }
            }
            med = median(v, n)
            ratio = m ? sprintf("%.2f", med / median(b, m)) : "-"
            range = m ? sprintf("%.2f-%.2f", lo, hi) : "-"
            printf "%s\t%s\t%d\t%s\t%s\t%d\n", s, p, med, ratio, range, errors[s, p]
        }
    }' "$WORK/results.tsv"
