#!/usr/bin/env bash
# Builds the Python guest with componentize-py (the version pinned in
# requirements.txt: `pip install -r guest/python/requirements.txt`).
# Usage: guest/python/build.sh [OUT.wasm [WORLD]]   (default guest/python/guest.wasm;
# WORLD `guest`, the default, or `serve`: the same without wasi:logging, for
# `wasmtime serve`)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/guest.wasm}")"
cd "$here"
componentize-py --wit-path wit --world "runner:python-guest/${2:-guest}" componentize app --output "$out"
