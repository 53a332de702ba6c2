# Shared by the bench scripts: `source bench/lib.sh` after setting WORK.

# start_runner BIN ARGS...: starts BIN --tenants 100 (or $TENANTS) on port-0 listeners
# with ARGS, waits until it listens, and sets PID, ADDR (tenant traffic) and
# ADMIN (metrics). Each start has its own output files, so several runners
# can run at once.
STARTS=0
start_runner() {
    local bin=$1
    shift
    STARTS=$((STARTS + 1))
    local out="$WORK/out.$STARTS" err="$WORK/err.$STARTS"
    "$bin" --tenants "${TENANTS:-100}" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 "$@" \
        >"$out" 2>"$err" &
    PID=$!
    ADDR= ADMIN=
    local i=0
    # Both lines: they may come in either order.
    while [[ (-z $ADDR || -z $ADMIN) && $i -lt 600 ]]; do
        ADDR=$(sed -n -E 's|^listening on https?://||p' "$out" | head -1)
        ADMIN=$(sed -n 's|^metrics on http://||p' "$out" | head -1)
        [[ -n $ADDR && -n $ADMIN ]] || sleep 0.1
        i=$((i + 1))
    done
    [[ -n $ADDR && -n $ADMIN ]] || { cat "$err" >&2; exit 1; }
}
