#!/bin/sh
# Base images from Debian's packages, for a machine that reaches no image registry but does reach a Debian
# mirror: a debootstrap'd Debian imported with `docker import`, then PostgreSQL and Python from its packages.
#   insertbench-local/python:3.11   stands in for python:3.11-slim   (Debian's python3.11, venv)
#   insertbench-local/postgres:15   stands in for postgres:15        (Debian's postgresql-15)
# Use them with:  BENCH_PYTHON_IMAGE=insertbench-local/python:3.11 BENCH_POSTGRES_IMAGE=insertbench-local/postgres:15
# Needs root, debootstrap and a running Docker daemon. Env: SUITE (default bookworm), MIRROR, HOST_CA_BUNDLE.
set -eu
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root: run this script with sudo" >&2; exit 2; }

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$rootfs" "$MIRROR"
# pip in the images trusts what this host trusts (a TLS-intercepting proxy's CA included): its CA bundle goes in.
cp "${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$rootfs/etc/ssl/certs/host-ca-bundle.pem"
tar -C "$rootfs" --numeric-owner -c . | docker import -c "ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.pem" - \
    "insertbench-local/debian:$SUITE"

# Builds use the host's network: no bridge needed, and apt reaches the same mirror.
docker build --network host -t insertbench-local/python:3.11 - <<DOCKERFILE
FROM insertbench-local/debian:$SUITE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3.11 python3.11-venv \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]
DOCKERFILE

docker build --network host -t insertbench-local/postgres:15 - <<DOCKERFILE
FROM insertbench-local/debian:$SUITE
RUN mkdir -p /etc/postgresql-common && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
    && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       -o Dpkg::Options::=--force-confold postgresql-15 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:\$PATH LANG=C.UTF-8
DOCKERFILE
docker images 'insertbench-local/*'
