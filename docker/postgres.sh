#!/bin/sh
# The postgres container's entry: a throwaway cluster with the embedded one's settings (harness/measure/postgres.py),
# pg_stat_statements, and a password generated at every start unless BENCH_PG_PASSWORD is set; the bench
# container reads it from the volume they share. Works on postgres:15 and insertbench-local/postgres:15 alike.
set -eu
secret=/run/insertbench/pg-password
umask 077
if [ -n "${BENCH_PG_PASSWORD:-}" ]; then printf %s "$BENCH_PG_PASSWORD" > "$secret"
else od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$secret"; fi
data=/var/lib/insertbench-pg
rm -rf "$data" && mkdir -p "$data" && cp "$secret" "$data.pw" && chown postgres: "$data" "$data.pw"
as_postgres="setpriv --reuid=postgres --regid=postgres --init-groups"
$as_postgres initdb -D "$data" -U insertbench --pwfile="$data.pw" --auth-local=trust --auth-host=scram-sha-256 \
    --no-locale -E UTF8 >/dev/null
rm "$data.pw"
echo "host all all all scram-sha-256" >> "$data/pg_hba.conf"
echo "CREATE DATABASE insertbench" | $as_postgres postgres --single -D "$data" postgres >/dev/null
echo "CREATE EXTENSION pg_stat_statements" | $as_postgres postgres --single -D "$data" insertbench >/dev/null
exec $as_postgres postgres -D "$data" -c listen_addresses="${BENCH_PG_LISTEN:-127.0.0.1}" \
    -c port="${BENCH_PG_PORT:-5432}" -c max_connections=300 -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_utility=on \
    -c unix_socket_directories=/tmp -c log_min_messages=warning "$@"
