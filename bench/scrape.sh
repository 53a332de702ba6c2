#!/usr/bin/env bash
# The /metrics scrape: its size and how long it takes, plain and gzipped,
# with many tenants, before any request and after each tenant served one.
#
#   bench/scrape.sh
#
# For each N in COUNTS: runner --tenants N (default --metrics-max-tenants,
# 1000: tenants past it share tenant="_other"); SCRAPES scrapes with curl,
# plain and with Accept-Encoding: gzip, idle; then one request to every
# tenant, in order (curl's URL globbing over one connection), and the same
# scrapes again. Prints the bytes and the median (min-max) seconds of each.
#
# Settings (environment): COUNTS ("1000 100000"), SCRAPES (5), EXTRA (more
# runner arguments, e.g. "--metrics-max-tenants 100000").
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${COUNTS:-1000 100000}
SCRAPES=${SCRAPES:-5}
EXTRA=${EXTRA:-}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
RUNNER=$TARGET_DIR/release/runner
cargo build --release --quiet -p runner --bin runner
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runner-scrape.XXXXXX")
# shellcheck source=bench/lib.sh
source bench/lib.sh
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

# scrape LABEL [CURL ARGS]: SCRAPES scrapes; prints bytes and seconds.
scrape() {
    local label=$1
    shift
    local times=() bytes=0
    for _ in $(seq "$SCRAPES"); do
        read -r t b < <(curl -sS -o /dev/null -w '%{time_total} %{size_download}\n' "$@" \
            "http://$ADMIN/metrics")
        times+=("$t")
        bytes=$b
    done
    local sorted
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    printf '%-28s %10s bytes  %ss (%s-%s)\n' "$label" "$bytes" \
        "$(sed -n "$(((SCRAPES + 1) / 2))p" <<<"$sorted")" \
        "$(head -1 <<<"$sorted")" "$(tail -1 <<<"$sorted")"
}

for n in $COUNTS; do
    # shellcheck disable=SC2086
    TENANTS=$n start_runner "$RUNNER" $EXTRA
    echo "== $n tenants"
    scrape "idle, plain"
    scrape "idle, gzip" -H 'Accept-Encoding: gzip'
    curl -sS -o /dev/null "http://$ADDR/t/t[0-$((n - 1))]/hello"
    scrape "each served one, plain"
    scrape "each served one, gzip" -H 'Accept-Encoding: gzip'
    kill "$PID"
    wait "$PID" 2>/dev/null || true
done
