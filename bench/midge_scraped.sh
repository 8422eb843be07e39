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
    # the scraper ends with the broker ($$ is the broker's PID once this script execs it).
    # It stands for Prometheus: one long-lived process on a kept-alive connection, on the
    # other core (the load generator's), since its own work is not the broker's cost;
    # answering it is
    broker=$$
    pin=""
    if command -v taskset >/dev/null 2>&1; then pin="taskset -c ${MIDGE_SCRAPER_CPU:-1}"; fi
    $pin python3 -c '
import http.client, os, sys, time
broker, port = int(sys.argv[1]), int(sys.argv[2])
conn = None
while True:
    try:
        os.kill(broker, 0)
    except OSError:
        break
    try:
        conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for path in ("/metrics", "/stats"):
            conn.request("GET", path)
            conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        conn = None
    time.sleep(1)
' "$broker" "$http_port" >/dev/null 2>&1 &
fi
exec python3 -m midge -q -c "$config"
