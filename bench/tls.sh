#!/usr/bin/env bash
# HTTPS against plain HTTP on the same route, in one run: two runners of
# the same build and tenants, one with --tls-cert (a certificate made here
# by openssl, for localhost), loaded by loadgen in turns, round by round so
# that drift hits both alike.
#
#   bench/tls.sh
#
# Modes, each `loadgen -c $CONNECTIONS --duration $DURATION` on /t/t0/hello:
#   plain       HTTP/1.1 keep-alive
#   tls         HTTPS keep-alive (one handshake per connection)
#   plain-new   a new connection per request (Connection: close)
#   tls-new     a new HTTPS connection per request, its session resumed
#               (loadgen's connections share one client, as browsers do)
# Only successful responses count. Prints every round, then each mode's
# median successes/s and its ratio to its plain twin, with the min-max of
# the per-round ratios.
#
# Settings (environment): ROUNDS (3), DURATION (5s), CONNECTIONS (32),
# PROFILE (dist, the build to deploy; release, the quicker one).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
PROFILE=${PROFILE:-dist}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --profile "$PROFILE" --quiet -p runner --bin runner -p loadgen --bin loadgen
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runner-tls.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
source bench/lib.sh

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-ca -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/req.pem" 2>/dev/null
printf 'subjectAltName=DNS:localhost\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/req.pem" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/ext" -out "$WORK/cert.pem" 2>/dev/null

RUNNER="$TARGET_DIR/$PROFILE/runner"
LOADGEN="$TARGET_DIR/$PROFILE/loadgen"
TENANTS=1 start_runner "$RUNNER"
PLAIN="http://$ADDR"
TENANTS=1 start_runner "$RUNNER" --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"
TLS="https://localhost:${ADDR##*:}"

# load MODE: successes per second of one loadgen run.
load() {
    local url extra=()
    case $1 in
    plain) url=$PLAIN ;;
    tls) url=$TLS ;;
    plain-new) url=$PLAIN extra=(-H "Connection: close") ;;
    tls-new) url=$TLS extra=(-H "Connection: close") ;;
    esac
    "$LOADGEN" --cacert "$WORK/ca.pem" -c "$CONNECTIONS" --duration "$DURATION" --warmup 1s \
        "${extra[@]}" --json "$WORK/report.json" "$url/t/t0/hello" >/dev/null
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["successes"]/r["elapsed_seconds"]))' \
        "$WORK/report.json"
}

MODES="plain tls plain-new tls-new"
for ((round = 1; round <= ROUNDS; round++)); do
    line="round $round:"
    for mode in $MODES; do
        rate=$(load "$mode")
        echo "$mode $rate" >>"$WORK/rates"
        line+=" $mode $rate/s"
    done
    echo "$line"
done
python3 - "$WORK/rates" "$ROUNDS" <<'PY'
import statistics, sys
rates = {}
for line in open(sys.argv[1]):
    mode, rate = line.split()
    rates.setdefault(mode, []).append(float(rate))
for mode, twin in [("plain", None), ("tls", "plain"), ("plain-new", None), ("tls-new", "plain-new")]:
    median = statistics.median(rates[mode])
    if twin is None:
        print(f"{mode:10} {median:9.0f}/s")
        continue
    ratios = [a / b for a, b in zip(rates[mode], rates[twin])]
    print(f"{mode:10} {median:9.0f}/s  {median / statistics.median(rates[twin]):.2f}x {twin} "
          f"(rounds {min(ratios):.2f}-{max(ratios):.2f})")
PY
