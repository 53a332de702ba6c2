#!/usr/bin/env bash
# Builds the Python guest with componentize-py (the version pinned in
# requirements.txt: `pip install -r guest/python/requirements.txt`).
# Usage: guest/python/build.sh [OUT.wasm]   (default guest/python/guest.wasm)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/guest.wasm}")"
cd "$here"
componentize-py --wit-path wit --world runner:python-guest/guest componentize app --output "$out"
