#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the tests and print its DSN on stdout.
# Usage: .ci/postgres.sh [DIR]   (stop it with: pg_ctl -D DIR/data stop, as postgres;
# start it again with: pg_ctl -D DIR/data -l DIR/log start -o "$(cat DIR/start-opts)")
# Installs Debian's `postgresql` package when missing. initdb refuses root, so the cluster
# runs as the `postgres` user, in a temp directory, on a free port, with its socket there too.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
dir=${1:-$(mktemp -d /tmp/relay-pg.XXXXXX)}  # optional: where to put the cluster
[ "$(id -u)" != 0 ] || chown postgres: "$dir"
chmod 700 "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
echo "$opts" >"$dir/start-opts"  # for a restart (see Usage); tests/pg.py's Cluster uses the same
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start -o "$opts" >/dev/null
as_pg "$bin/psql" -h "$dir" -p "$port" -U postgres -q -c "CREATE DATABASE relay_test" >/dev/null
echo "postgresql://postgres@127.0.0.1:$port/relay_test"
