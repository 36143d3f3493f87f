#!/bin/sh
# The bench container's entry: `python -m harness run` with the given options, against the postgres
# service (BENCH_DSN, or one built from BENCH_PG_HOST and the password the postgres container generated).
set -eu
[ "${1:-}" = "--" ] && shift
if [ -z "${BENCH_DSN:-}" ]; then
    secret=/run/insertbench/pg-password
    [ -s "$secret" ] || { echo "no PostgreSQL password in $secret: start the postgres service first" >&2; exit 2; }
    BENCH_DSN="postgresql://insertbench:$(cat "$secret")@${BENCH_PG_HOST:-127.0.0.1}:${BENCH_PG_PORT:-5432}/insertbench"
    export BENCH_DSN
fi
git config --global --add safe.directory /src 2>/dev/null || true
exec python -m harness run "$@"
