#!/usr/bin/env bash
# Density: how long the runner takes to listen, and how much memory it
# holds idle, with many tenants; and what the compiled-component cache
# saves a start-up with many distinct components.
#
#   bench/density.sh
#
# Series, interleaved round by round so that drift hits all alike:
#   tenants N      runner --tenants N (the embedded guest, key-value in
#                  memory), for N in COUNTS: time from spawn to its
#                  `listening on` line, then VmRSS after SETTLE idle.
#   components K   a tenants file of K tenants, each on a distinct component
#                  (the hostile test guest with a custom section of its own),
#                  started with an empty --cache-dir (cold: K compilations),
#                  then again on the filled one (warm: none).
# Prints every round, then the median of each series with its min-max.
#
# Settings (environment): ROUNDS (3), COUNTS ("1000 10000 100000"),
# COMPONENTS (20), SETTLE (1s).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
COUNTS=${COUNTS:-1000 10000 100000}
COMPONENTS=${COMPONENTS:-20}
SETTLE=${SETTLE:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
RUNNER=$TARGET_DIR/release/runner
GUEST=$TARGET_DIR/guests/wasm32-wasip2/release/guest_hostile.wasm
cargo build --release --quiet -p runner --bin runner
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runner-density.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The K components and their tenants file.
python3 - "$GUEST" "$WORK" "$COMPONENTS" <<'EOF'
import sys
guest, work, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
code = open(guest, "rb").read()
with open(f"{work}/tenants.toml", "w") as toml:
    for i in range(count):
        name = f"v{i}".encode()
        payload = bytes([len(name)]) + name
        open(f"{work}/v{i}.wasm", "wb").write(code + bytes([0, len(payload)]) + payload)
        toml.write(f'[tenants.v{i}]\ncomponent = "v{i}.wasm"\n')
EOF

# run ARGS...: starts the runner, prints "SECONDS RSS_KIB" once it listens
# and has idled SETTLE seconds, then stops it.
run() {
    local start end pid rss
    start=$(date +%s%N)
    "$RUNNER" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --log warn "$@" \
        >"$WORK/out" 2>"$WORK/err" &
    pid=$!
    until grep -q '^listening on' "$WORK/out"; do
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/err" >&2; exit 1; }
        sleep 0.005
    done
    end=$(date +%s%N)
    sleep "$SETTLE"
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo "$(((end - start) / 1000000)) $rss"
}

declare -A STARTS RSS
for round in $(seq "$ROUNDS"); do
    for n in $COUNTS; do
        read -r ms kib < <(run --tenants "$n")
        echo "round $round  tenants $n: listening after ${ms} ms, RSS ${kib} KiB"
        STARTS[tenants-$n]+="$ms "
        RSS[tenants-$n]+="$kib "
    done
    rm -rf "$WORK/cache"
    for warmth in cold warm; do
        read -r ms kib < <(run --config "$WORK/tenants.toml" --cache-dir "$WORK/cache")
        echo "round $round  components $COMPONENTS $warmth: listening after ${ms} ms, RSS ${kib} KiB"
        STARTS[components-$warmth]+="$ms "
        RSS[components-$warmth]+="$kib "
    done
done

# median_range "V V V": the median and the min-max.
median_range() {
    tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -n | awk '
        { v[NR] = $1 }
        END { printf "%s (%s-%s)", v[int((NR + 1) / 2)], v[1], v[NR] }'
}

echo
echo "series                 listening after (ms)      idle RSS (KiB)"
for series in $(for n in $COUNTS; do echo "tenants-$n"; done) components-cold components-warm; do
    printf '%-22s %-25s %s\n' "$series" "$(median_range "${STARTS[$series]}")" \
        "$(median_range "${RSS[$series]}")"
done
