# Shared by the bench scripts: `source bench/lib.sh` after setting WORK.

# start_runner BIN ARGS...: starts BIN --tenants 100 on port-0 listeners
# with ARGS, waits until it listens, and sets PID and ADDR.
start_runner() {
    local bin=$1
    shift
    "$bin" --tenants 100 --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 "$@" \
        >"$WORK/out" 2>"$WORK/err" &
    PID=$!
    ADDR=
    local i=0
    while [[ -z $ADDR && $i -lt 600 ]]; do
        ADDR=$(sed -n 's|^listening on http://||p' "$WORK/out" | head -1)
        [[ -n $ADDR ]] || sleep 0.1
        i=$((i + 1))
    done
    [[ -n $ADDR ]] || { cat "$WORK/err" >&2; exit 1; }
}
