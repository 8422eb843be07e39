#!/usr/bin/env bash
# A broker command for the yardstick: midge with a tcp listener on PORT and, with
# --scraped, an http listener on a free port that a background loop scrapes every second
# (GET /metrics and GET /stats, as Prometheus and the status page would).
#   bench/midge_scraped.sh PORT [--scraped]
# Both forms use the same configuration otherwise ([plugins.auth_allow]), so a compare.sh
# of the two measures what being observed costs:
#   compare.sh plain 'bench/midge_scraped.sh {port}' scraped 'bench/midge_scraped.sh {port} --scraped'
set -euo pipefail
port="$1"
scraped="${2:-}"
# the yardstick gives a scratch directory it removes afterwards
dir="${BENCH_TMPDIR:-$(mktemp -d)}"
config="$dir/midge.toml"
cat > "$config" <<TOML
[[listeners]]
type = "tcp"
host = "127.0.0.1"
port = $port

[plugins.auth_allow]
TOML
if [ "$scraped" = "--scraped" ]; then
    http_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    cat >> "$config" <<TOML

[[listeners]]
type = "http"
host = "127.0.0.1"
port = $http_port
TOML
    # the loop ends with the broker: $$ is the broker's PID once this script execs it.
    # It runs on the other core (the load generator's): the scraper stands for Prometheus,
    # which is not the broker's cost; answering it is
    broker=$$
    pin=""
    if command -v taskset >/dev/null 2>&1; then pin="taskset -c ${MIDGE_SCRAPER_CPU:-1}"; fi
    $pin bash -c '
        broker=$1; http_port=$2
        while kill -0 "$broker" 2>/dev/null; do
            curl -s -o /dev/null "http://127.0.0.1:$http_port/metrics" || true
            curl -s -o /dev/null "http://127.0.0.1:$http_port/stats" || true
            sleep 1
        done' scraper "$broker" "$http_port" >/dev/null 2>&1 &
fi
exec python3 -m midge -q -c "$config"
