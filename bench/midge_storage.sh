#!/usr/bin/env bash
# A broker command for the yardstick's qos1p scenario: midge with [plugins.auth_allow] and
# one storage table (or none), so a compare.sh of two forms measures what storage costs:
#   compare.sh none 'bench/midge_storage.sh none - {port}' \
#              sqlite-sync 'bench/midge_storage.sh sqlite sync {port}' --scenarios qos1p
#   bench/midge_storage.sh none|sqlite|lmdb|redis sync|periodic PORT
# redis: a redis-server on 127.0.0.1:${MIDGE_REDIS_PORT:-16399}, started beforehand
# (redis-server --port 16399 --appendonly yes --appendfsync everysec --save '').
set -euo pipefail
backend="$1"; durability="$2"; port="$3"
# the yardstick gives a scratch directory it removes afterwards
dir="${BENCH_TMPDIR:-$(mktemp -d)}"
config="$dir/midge.toml"
{
    printf '[[listeners]]\nport = %s\n\n[plugins.auth_allow]\n' "$port"
    case "$backend" in
        none) ;;
        sqlite) printf '\n[plugins.storage_sqlite]\npath = "%s/midge.db"\n' "$dir" ;;
        lmdb) printf '\n[plugins.storage_lmdb]\npath = "%s/lmdb"\n' "$dir" ;;
        redis) printf '\n[plugins.storage_redis]\nurl = "redis://127.0.0.1:%s/0"\nprefix = "%s:"\n' \
                   "${MIDGE_REDIS_PORT:-16399}" "$(basename "$dir")" ;;
        *) echo "unknown backend $backend" >&2; exit 2 ;;
    esac
    if [ "$backend" != none ]; then printf 'durability = "%s"\n' "$durability"; fi
} > "$config"
exec python3 -m midge -q -c "$config"
