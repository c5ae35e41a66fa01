#!/usr/bin/env bash
# How long `make install` takes on a fresh clone, with each installer: a clone of this repository's HEAD
# in a temporary folder, uv's cache emptied first (as on a machine that never ran uv), then
# `make install INSTALLER=<uv|pip>`; torch comes from TORCH_SPEC by that installer.
#
#   bash benchmarks/install_time.sh            # uv, then pip
#   bash benchmarks/install_time.sh uv         # one of them
#
# Prints one line per installer: seconds of wall time for the whole install.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
installers=("$@")
[ ${#installers[@]} -gt 0 ] || installers=(uv pip)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for installer in "${installers[@]}"; do
    git clone --quiet "$repo" "$work/$installer"
    rm -rf "$(uv cache dir 2>/dev/null || echo "$HOME/.cache/uv")"
    start=$(date +%s.%N)
    make -C "$work/$installer" install INSTALLER="$installer" >"$work/$installer.log" 2>&1 \
        || { cat "$work/$installer.log"; exit 1; }
    end=$(date +%s.%N)
    printf '%s: make install in %.1f s\n' "$installer" "$(echo "$end - $start" | bc)"
done
