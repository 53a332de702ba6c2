#!/usr/bin/env bash
# End-to-end throughput and p99 latency over loopback HTTP: the runner
# (`--tenants 100`, the embedded default guest) against the native baseline
# (runner/examples/native.rs, same routes, no wasm).
#
#   bench/e2e.sh
#
# Per server, after pre-loading keys:
#   mix      get=80,set=20 over 100 tenants x 100 keys, 100-byte values
#   hello    GET /t/{tenant}/hello over 100 tenants (no store access)
#   setget   wrk -t1 -c32 on one URL that sets then gets a key (the runner's
#            /t/t0/demo, the native /t/t0/setget/hello): CONTEXT.md's setup
#
# The load generator is target/release/loadgen when it builds, else wrk (with
# a Lua script for the mix); the summary says which. Both run one load
# thread on the same 2-core machine as the server, so the server gets
# roughly one core and the figures are lower bounds on what it can do.
#
# Settings (environment): E2E_DURATION (10s), E2E_SETGET_DURATION (5s),
# E2E_CONNECTIONS (32), E2E_TENANTS (100), E2E_KEYS (100 per tenant),
# E2E_VALUE_SIZE (100), E2E_LOAD_THREADS (1), E2E_TOOL (loadgen or wrk, to
# force one). Total time with a built tree: about 75 seconds.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

DURATION=${E2E_DURATION:-10s}
SETGET_DURATION=${E2E_SETGET_DURATION:-5s}
CONNECTIONS=${E2E_CONNECTIONS:-32}
TENANTS=${E2E_TENANTS:-100}
KEYS=${E2E_KEYS:-100}
VALUE_SIZE=${E2E_VALUE_SIZE:-100}
LOAD_THREADS=${E2E_LOAD_THREADS:-1}
# Enough random PUTs to cover ~95% of the TENANTS x KEYS keys (1 - e^-3).
PRELOAD_REQUESTS=$((TENANTS * KEYS * 3))

WORK=$(mktemp -d "${TMPDIR:-/tmp}/runner-e2e.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '== %s\n' "$*" >&2; }

# --- build -------------------------------------------------------------------
log "building runner and the native baseline (release)"
cargo build --release --quiet -p runner --bin runner --example native
RUNNER_BIN=$TARGET_DIR/release/runner
NATIVE_BIN=$TARGET_DIR/release/examples/native

TOOL=${E2E_TOOL:-}
if [[ -z $TOOL || $TOOL == loadgen ]]; then
    log "building loadgen (release)"
    if cargo build --release --quiet -p loadgen 2>"$WORK/loadgen-build.log"; then
        TOOL=loadgen
    elif [[ $TOOL == loadgen ]]; then
        cat "$WORK/loadgen-build.log" >&2
        exit 1
    else
        log "loadgen does not build; falling back to wrk (build log: tail below)"
        tail -5 "$WORK/loadgen-build.log" >&2 || true
        TOOL=wrk
    fi
fi
LOADGEN_BIN=$TARGET_DIR/release/loadgen

if ! command -v wrk >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing wrk (Debian package)"
        apt-get install -y -qq wrk >/dev/null
    elif [[ $TOOL == wrk ]]; then
        echo "wrk is not installed: apt-get install -y wrk" >&2
        exit 1
    fi
fi
HAVE_WRK=$(command -v wrk >/dev/null && echo yes || echo no)

# --- servers -----------------------------------------------------------------
# start NAME CMD...: runs CMD in the background with stdout in
# $WORK/NAME.out, waits for its `listening on http://ADDR` line and sets
# ADDR. The process is killed on exit.
start() {
    local name=$1
    shift
    : >"$WORK/$name.out"
    "$@" >>"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    local pid=$! i
    ADDR=
    for ((i = 0; i < 600; i++)); do
        ADDR=$(sed -n 's|^listening on http://||p' "$WORK/$name.out" | head -1)
        [[ -n $ADDR ]] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before listening:" >&2
            cat "$WORK/$name.err" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "$name did not print its listening line within 60 s" >&2
    exit 1
}

stop_last() {
    local pid=${PIDS[-1]}
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset 'PIDS[-1]'
}

# --- load --------------------------------------------------------------------
cat >"$WORK/mix.lua" <<'LUA'
-- The loadgen mix for wrk: E2E_OP is "mix" (get/set over tenants x keys) or
-- "hello"; E2E_SET_PERCENT of mix requests are PUTs.
local op = os.getenv("E2E_OP")
local tenants = tonumber(os.getenv("E2E_TENANTS"))
local keys = tonumber(os.getenv("E2E_KEYS"))
local set_percent = tonumber(os.getenv("E2E_SET_PERCENT"))
local value = string.rep("v", tonumber(os.getenv("E2E_VALUE_SIZE")))

function init(args)
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
    local tenant = math.random(0, tenants - 1)
    if op == "hello" then
        return wrk.format("GET", "/t/t" .. tenant .. "/hello")
    end
    local path = "/t/t" .. tenant .. "/kv/k" .. math.random(0, keys - 1)
    if math.random(1, 100) <= set_percent then
        return wrk.format("PUT", path, nil, value)
    end
    return wrk.format("GET", path)
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("E2E rps=%.1f p99_us=%d errors=%d requests=%d\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(99),
        e.connect + e.read + e.write + e.timeout + e.status, summary.requests))
end
LUA

# The wrk script for one fixed URL: only the summary line.
cat >"$WORK/summary.lua" <<'LUA'
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("E2E rps=%.1f p99_us=%d errors=%d requests=%d\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(99),
        e.connect + e.read + e.write + e.timeout + e.status, summary.requests))
end
LUA

RESULTS=$WORK/results.tsv
printf 'server\tworkload\ttool\treq/s\tp99 ms\terrors\trequests\n' >"$RESULTS"

# record SERVER WORKLOAD TOOL OUTFILE: appends the E2E line of a wrk run.
record_wrk() {
    local line rps p99 errors requests
    line=$(grep '^E2E ' "$4" | tail -1)
    rps=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line")
    p99=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line")
    errors=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$line")
    requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")
    awk -v s="$1" -v w="$2" -v t="$3" -v rps="$rps" -v p99="$p99" -v e="$errors" -v n="$requests" \
        'BEGIN { printf "%s\t%s\t%s\t%.0f\t%.3f\t%s\t%s\n", s, w, t, rps, p99 / 1000, e, n }' >>"$RESULTS"
}

record_loadgen() {
    jq -r --arg s "$1" --arg w "$2" \
        '[$s, $w, "loadgen", (.achieved_rate | floor), (.latency.p99_us / 1000), .errors, .requests] | @tsv' \
        "$3" >>"$RESULTS"
}

# load SERVER URL OP [extra loadgen args]: OP is preload, mix or hello.
load() {
    local server=$1 url=$2 op=$3
    shift 3
    local out=$WORK/$server-$op
    if [[ $TOOL == loadgen ]]; then
        local args=(--target "$url" --tenants "$TENANTS" --keys "$KEYS"
            --value-size "$VALUE_SIZE" --concurrency "$CONNECTIONS"
            --threads "$LOAD_THREADS" --json "$out.json" "$@")
        case $op in
        preload) args+=(--mix set=100 --requests "$PRELOAD_REQUESTS" --warmup 0s) ;;
        mix) args+=(--mix get=80,set=20 --duration "$DURATION" --warmup 1s) ;;
        hello) args+=(--mix hello=100 --duration "$DURATION" --warmup 1s) ;;
        esac
        log "$server $op: loadgen ${args[*]}"
        timeout 120 "$LOADGEN_BIN" "${args[@]}" >"$out.txt" 2>&1 || {
            echo "loadgen failed ($server $op):" >&2
            cat "$out.txt" >&2
            exit 1
        }
        [[ $op == preload ]] || record_loadgen "$server" "$op" "$out.json"
    else
        local duration=$DURATION set_percent=20
        case $op in
        preload) duration=$(((PRELOAD_REQUESTS / 5000) + 1))s set_percent=100 ;;
        esac
        local wrk_op=mix
        [[ $op == hello ]] && wrk_op=hello
        log "$server $op: wrk -t$LOAD_THREADS -c$CONNECTIONS -d$duration (mix.lua: $wrk_op, set $set_percent%)"
        E2E_OP=$wrk_op E2E_TENANTS=$TENANTS E2E_KEYS=$KEYS E2E_SET_PERCENT=$set_percent \
            E2E_VALUE_SIZE=$VALUE_SIZE timeout 120 \
            wrk -t"$LOAD_THREADS" -c"$CONNECTIONS" -d"$duration" -s "$WORK/mix.lua" "$url" \
            >"$out.txt" 2>&1
        [[ $op == preload ]] || record_wrk "$server" "$op" wrk "$out.txt"
    fi
}

# setget SERVER URL: CONTEXT.md's wrk run on one set-then-get URL.
setget() {
    local out=$WORK/$1-setget.txt
    if [[ $HAVE_WRK != yes ]]; then
        log "$1 setget: skipped (no wrk)"
        return
    fi
    log "$1 setget: wrk -t1 -c$CONNECTIONS -d$SETGET_DURATION $2"
    timeout 60 wrk -t1 -c"$CONNECTIONS" -d"$SETGET_DURATION" -s "$WORK/summary.lua" "$2" >"$out" 2>&1
    record_wrk "$1" setget wrk "$out"
}

# --- runs --------------------------------------------------------------------
log "starting runner --tenants $TENANTS"
start runner "$RUNNER_BIN" --tenants "$TENANTS" --listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --log warn
RUNNER_URL=http://$ADDR
log "runner listening on $RUNNER_URL"
load runner "$RUNNER_URL" preload
load runner "$RUNNER_URL" mix
load runner "$RUNNER_URL" hello
setget runner "$RUNNER_URL/t/t0/demo"
stop_last

log "starting the native baseline"
start native "$NATIVE_BIN" 127.0.0.1:0
NATIVE_URL=http://$ADDR
log "native listening on $NATIVE_URL"
load native "$NATIVE_URL" preload
load native "$NATIVE_URL" mix
load native "$NATIVE_URL" hello
setget native "$NATIVE_URL/t/t0/setget/hello"
stop_last

# --- summary -----------------------------------------------------------------
echo
echo "load generator: $TOOL ($LOAD_THREADS thread, $CONNECTIONS connections, sharing $(nproc) cores with the server)"
echo "mix and hello: $DURATION each ($TOOL; loadgen adds a 1 s warm-up), $TENANTS tenants x $KEYS keys, $VALUE_SIZE-byte values"
echo "setget: wrk -t1 -c$CONNECTIONS -d$SETGET_DURATION on one URL (runner /t/t0/demo, native /t/t0/setget/hello)"
column -t -s $'\t' "$RESULTS"
echo
echo "runner vs native (req/s ratio):"
awk -F'\t' 'NR > 1 { rps[$1 "/" $2] = $4; w[$2] = 1 }
    END { for (k in w) if (rps["native/" k] > 0)
        printf "  %-7s %.2f\n", k, rps["runner/" k] / rps["native/" k] }' "$RESULTS" | sort
