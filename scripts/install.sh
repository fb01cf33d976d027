#!/usr/bin/env bash
# Installs what cloudhpc needs on Debian 12 as root: Slurm, munge, Open MPI (system packages)
# and the project itself in .venv. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "error: run as root (cloudhpc's local provider creates network namespaces)" >&2
  exit 1
fi

APT_PACKAGES=(slurmctld slurmd slurm-client munge openmpi-bin libopenmpi-dev python3-mpi4py
              iproute2 util-linux procps python3-venv chromium tmux
              mariadb-server slurmdbd hpcc mmdebstrap)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Node.js tools (Azurite, the storage node's blob service), pinned in package-lock.json
if ! command -v npm >/dev/null; then
  echo "installing system packages: nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends nodejs npm
fi
if [ ! -f node_modules/.installed ] || [ package-lock.json -nt node_modules/.installed ]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.installed
fi
# Azurite's blob service in one file (src/cloudhpc/storage/azurite_start.js starts it with
# V8's code cache): its own start reads and compiles some 1,500 modules, 2.6 s of CPU on the
# path of every `up`. lokijs stays outside (azurite_durable.js patches it when it loads);
# the others left out are SQL drivers of Azurite's database mode, which cloudhpc does not use.
bundle=node_modules/.cloudhpc/azurite-blob.js
if [ ! -f "$bundle" ] || [ node_modules/.installed -nt "$bundle" ]; then
  mkdir -p node_modules/.cloudhpc
  rm -f "$bundle.v8cache"
  node_modules/.bin/esbuild node_modules/azurite/dist/src/blob/main.js --bundle \
    --platform=node --target=node18 --log-level=error --outfile="$bundle.new" \
    --external:lokijs --external:pg --external:pg-hstore --external:pg-native \
    --external:tedious --external:mariadb --external:sqlite3 --external:oracledb \
    --external:ibm_db --external:snowflake-sdk
  mv "$bundle.new" "$bundle"
fi

# Debian's own Python: jobs of every user run cloudhpc's staging from this venv, and an
# interpreter under /root (pyenv) is not theirs to run
PY=${PYTHON:-/usr/bin/python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi

# A new cluster's accounting database (MariaDB's and slurmdbd's tables), made once per
# installed MariaDB and slurmdbd and copied by each new cluster (src/cloudhpc/slurm/dbcache.py):
# slurmdbd's first start then does not make its tables on the path of `up`.
.venv/bin/python -m cloudhpc.slurm.dbcache || echo "install: no accounting database copy"
