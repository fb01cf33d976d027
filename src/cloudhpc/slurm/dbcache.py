"""A new cluster's accounting database, made once per machine and copied.

A cluster's first start of MariaDB and slurmdbd makes the same things every time: MariaDB's
system tables (mariadb-install-db) and then slurmdbd's own tables, which slurmdbd creates
at its first start (its TRES, QOS, users, accounts, transactions tables; a second on this
machine, on the path of `up`: slurmctld waits for slurmdbd at its first start). This module
makes that database once, with the installed MariaDB and slurmdbd themselves, in a network
namespace of its own (loopback only), shuts MariaDB down cleanly and keeps the data
directory under the machine's cache, named by the installed programs and the database's
name (a package upgrade makes a new one). `make install` runs it; a cluster whose copy is
missing makes its database the slow way. Nothing secret is kept: the database user's
password here is a placeholder; each cluster's MariaDB sets its own at every start.

    python -m cloudhpc.slurm.dbcache [DATABASE]
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from cloudhpc.errors import CommandError
from cloudhpc.runner import Runner

# the least slurmdbd asks for (it logs "Database settings not recommended values" below);
# a small first data file: a cluster's database is made in under a second
MARIADB_OPTIONS = ["--innodb-log-file-size=64M", "--innodb-data-file-path=ibdata1:8M:autoextend",
                   "--innodb-buffer-pool-size=128M", "--innodb-lock-wait-timeout=900",
                   "--innodb-flush-log-at-trx-commit=2", "--innodb-file-per-table=OFF",
                   "--skip-name-resolve",
                   "--performance-schema=OFF"]
CACHE = Path(os.environ.get("CLOUDHPC_DB_CACHE", "/var/cache/cloudhpc/db"))
PROGRAMS = ("/usr/sbin/mariadbd", "/usr/sbin/slurmdbd")


def _identity(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "none"
    return f"{st.st_size}-{int(st.st_mtime)}"


def cached(database: str) -> Path:
    """Where the database for DATABASE made by the installed MariaDB and slurmdbd is kept."""
    return CACHE / ("-".join(_identity(p) for p in PROGRAMS) + f"-{database}")


def script(work: Path, database: str, install: list[str], serve: list[str]) -> str:
    """Shell text, run in a network namespace of its own: the database, then slurmdbd's
    tables in it (slurmdbd logs "started" once they are made), both daemons stopped."""
    w = shlex.quote(str(work))
    opts = " ".join(shlex.quote(o) for o in install)
    serve_opts = " ".join(shlex.quote(o) for o in serve)
    db = database.replace("`", "")
    return f"""set -e
ip link set lo up
mariadb-install-db --no-defaults --datadir={w}/data --user=root \\
  --auth-root-authentication-method=socket --skip-test-db {opts} >{w}/install.log 2>&1
cat >{w}/init.sql <<'SQL'
CREATE DATABASE IF NOT EXISTS `{db}`;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'placeholder';
GRANT ALL ON `{db}`.* TO 'slurm'@'127.0.0.1';
SQL
mariadbd --no-defaults --user=root --datadir={w}/data --socket={w}/sock \\
  --bind-address=127.0.0.1 --port=3306 --pid-file={w}/mariadb.pid \\
  --init-file={w}/init.sql --log-error={w}/mariadb.log {serve_opts} &
i=0
until mariadb-admin --no-defaults --socket={w}/sock --silent ping >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -lt 600 ] || exit 1; sleep 0.1
done
cat >{w}/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=placeholder
StorageLoc={db}
LogFile={w}/slurmdbd.log
PidFile={w}/slurmdbd.pid
CONF
chmod 600 {w}/slurmdbd.conf
SLURM_CONF={w}/slurm.conf slurmdbd -D >{w}/slurmdbd.out 2>&1 &
dbd=$!
i=0
until grep -q "slurmdbd version .* started" {w}/slurmdbd.log 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 1200 ] || exit 1; sleep 0.05
done
kill $dbd; wait $dbd || true
mariadb-admin --no-defaults --socket={w}/sock shutdown
wait
"""


def make(database: str, install: list[str], serve: list[str],
         runner: Runner | None = None) -> Path:
    """Make the cached database for DATABASE unless it exists; returns its path. A
    failure leaves nothing half made (raises CommandError with the step's logs)."""
    target = cached(database)
    if target.is_dir():
        return target
    CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".making-", dir=CACHE))
    try:
        try:
            (runner or Runner()).run(["unshare", "--net", "sh", "-c",
                                      script(work, database, install, serve)], timeout=300)
        except CommandError as exc:
            logs = "".join((work / n).read_text(errors="replace")[-1500:]
                           for n in ("install.log", "mariadb.log", "slurmdbd.log")
                           if (work / n).exists())
            raise CommandError(exc.cmd[:3], exc.returncode, exc.stdout, exc.stderr + logs
                               ) from None
        try:
            os.rename(work / "data", target)
        except OSError:  # made meanwhile by another
            if not target.is_dir():
                raise
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    from cloudhpc.template.schema import Accounting

    database = argv[0] if argv else Accounting().database.name
    try:
        path = make(database, MARIADB_OPTIONS[:2], MARIADB_OPTIONS)
    except CommandError as exc:
        print(f"cloudhpc: could not prepare the accounting database copy: {exc.stderr[-2000:]}"
              " (clusters will make theirs at their first start, a few seconds slower)",
              file=sys.stderr)
        return 1
    print(f"accounting database for new clusters: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
