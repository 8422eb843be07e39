#!/usr/bin/env bash
# Measure midge beside Mosquitto with the project's yardstick (shared/bench beside the
# checkout: a C load generator, broker and generator pinned to different cores).
#   bench/run.sh              all scenarios, 3 rounds, midge defaults vs Mosquitto
#   bench/run.sh --quick      a one-round smoke run
# Mosquitto comes from Debian (apt-get install -y mosquitto); without it, midge runs alone.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
yardstick="${MIDGE_YARDSTICK:-$here/../../shared/bench}"
if [ ! -x "$yardstick/compare.sh" ]; then
    echo "bench: the yardstick is not at $yardstick (set MIDGE_YARDSTICK)" >&2
    exit 2
fi
if [ ! -x "$yardstick/mqbench" ]; then
    work="$(mktemp -d)"
    cp -r "$yardstick"/. "$work"/
    make -s -C "$work"
    yardstick="$work"
fi
rounds=(--rounds 3)
if [ "${1:-}" = "--quick" ]; then rounds=(--rounds 1 --quick); shift; fi
midge="python3 -m midge --port {port}"
if command -v mosquitto >/dev/null 2>&1; then
    exec "$yardstick/compare.sh" mosquitto "$yardstick/brokers/mosquitto.sh {port}" \
        midge "$midge" "${rounds[@]}" "$@"
fi
exec "$yardstick/run.sh" "${rounds[@]}" "$@" -- $midge
