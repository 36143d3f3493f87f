#!/bin/sh
# insertbench in containers, end to end: the bench image built from this tree, PostgreSQL up, `harness run`
# with these options in the bench container, then every container and the password volume removed, on
# success, failure or Ctrl-C alike.
#   docker/run.sh --quick        (options: docker/run.sh --help)
# Compose: `docker compose` (v2), else `docker-compose` (v1); COMPOSE overrides, COMPOSE_FILES adds -f files.
set -u
here=$(dirname "$0")
if [ -z "${COMPOSE:-}" ]; then
    if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
compose() { $COMPOSE -f "$here/compose.yaml" ${COMPOSE_FILES:-} "$@"; }
trap 'compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1' EXIT
trap 'exit 130' INT TERM
mkdir -p "${BENCH_RESULTS:-$here/../results}"
compose build bench && compose run --rm bench "$@"
