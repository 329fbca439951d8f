#!/usr/bin/env bash
# Installs the drivers the driver tests run (tests/it/drivers.rs) into target/drivers, from
# their registries: psycopg 3 and asyncpg (PyPI), pg and postgres (npm), and pgjdbc from
# Debian's libpostgresql-jdbc-java. Idempotent: what is there already is kept.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dest="${PGBROKER_DRIVERS:-$root/target/drivers}"
mkdir -p "$dest"

if [ ! -f "$dest/python/.done" ]; then
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --target "$dest/python" \
    "psycopg[binary]>=3.1,<4" "asyncpg>=0.29"
  touch "$dest/python/.done"
fi

if [ ! -f "$dest/node/.done" ]; then
  mkdir -p "$dest/node"
  npm install --silent --no-audit --no-fund --prefix "$dest/node" pg@8 postgres@3 >/dev/null
  touch "$dest/node/.done"
fi

jar=/usr/share/java/postgresql.jar
if [ ! -f "$jar" ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq libpostgresql-jdbc-java >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq libpostgresql-jdbc-java >/dev/null; }
  else
    sudo apt-get install -y -qq libpostgresql-jdbc-java >/dev/null
  fi
fi
command -v java >/dev/null || { echo "setup.sh: java is missing (apt-get install default-jre-headless)" >&2; exit 1; }
echo "drivers ready in $dest"
