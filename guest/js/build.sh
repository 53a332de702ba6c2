#!/usr/bin/env bash
# Builds the JavaScript guest with ComponentizeJS (the versions pinned in
# package-lock.json: `npm ci --prefix guest/js`).
# Usage: guest/js/build.sh [OUT.wasm]   (default guest/js/guest.wasm)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/guest.wasm}")"
cd "$here"
# ComponentizeJS reads the WIT through a sandboxed file system: relative
# paths from this directory.
node_modules/.bin/componentize-js app.js --wit wit --world-name runner:js-guest/guest --out "$out"
