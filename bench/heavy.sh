#!/usr/bin/env bash
# A/B of two runner binaries on one (heavy) component with fresh instances,
# on 1 and on 16 connections, interleaved round by round: how a change to
# the memory reset or the pool shows on guests with a large linear memory
# (the Python and JavaScript examples), and whether more connections than
# cores still help.
#
#   bench/heavy.sh OLD_RUNNER NEW_RUNNER COMPONENT.wasm
#
# Each round starts each binary with `--tenants 100 --component C` (and
# HEAVY_ARGS), warms tenant t0 for 1 s, then runs `wrk -t1 -cN -d$DURATION`
# on /t/t0$HEAVY_PATH for each N in CONNECTIONS.
# Prints every measurement and the requests that failed so far
# (runner_requests_total not `ok`; `client_gone` is left out: wrk stops with
# requests in flight).
#
# Settings (environment): ROUNDS (2), DURATION (4s), CONNECTIONS ("1 16"),
# HEAVY_PATH (/hello), HEAVY_ARGS (more runner flags for both).
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?usage: bench/heavy.sh OLD_RUNNER NEW_RUNNER COMPONENT.wasm}
B=${2:?usage: bench/heavy.sh OLD_RUNNER NEW_RUNNER COMPONENT.wasm}
COMPONENT=${3:?usage: bench/heavy.sh OLD_RUNNER NEW_RUNNER COMPONENT.wasm}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-4s}
CONNECTIONS=${CONNECTIONS:-1 16}
HEAVY_PATH=${HEAVY_PATH:-/hello}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runner-heavy.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
source bench/lib.sh

printf 'round\tbinary\tconnections\treq/s\tfailed so far\n'
for ((round = 1; round <= ROUNDS; round++)); do
    for label in A B; do
        bin=$A
        [[ $label == B ]] && bin=$B
        # shellcheck disable=SC2086 # HEAVY_ARGS is a list of flags
        start_runner "$bin" --component "$COMPONENT" --log warn ${HEAVY_ARGS:-}
        url=http://$ADDR/t/t0$HEAVY_PATH
        wrk -t1 -c4 -d1s "$url" >/dev/null
        for c in $CONNECTIONS; do
            rps=$(wrk -t1 -c"$c" -d"$DURATION" "$url" | awk '/^Requests\/sec/ { printf "%d", $2 }')
            bad=$(curl -s "http://$ADMIN/metrics" |
                awk '/^runner_requests_total/ && !/outcome="(ok|client_gone)"/ { n += $2 }
                    END { print n + 0 }')
            printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$label" "$c" "$rps" "$bad"
        done
        kill "$PID"
        wait "$PID" 2>/dev/null || true
    done
done
