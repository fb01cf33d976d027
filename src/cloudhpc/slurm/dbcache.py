"""A new cluster's accounting database, made once per machine and copied.

A cluster's first start of MariaDB and slurmdbd makes the same things every time: MariaDB's
system tables (mariadb-install-db), slurmdbd's own tables, which slurmdbd creates at its
first start (its TRES, QOS, users, accounts, transactions tables; a second on this
machine), and the cluster's own tables, which slurmdbd creates when slurmctld first
registers (twenty tables and the root association: 0.8-1.7 s, on the path of `up`, since
slurmctld waits for that answer at its first start). This module makes that database once,
with the installed MariaDB, slurmdbd and sacctmgr themselves (`sacctmgr add cluster` of a
placeholder cluster, PLACEHOLDER, a name no template can give), in namespaces of their own
(network: loopback and an unconnected address; mounts: munged's socket), shuts MariaDB down
cleanly and keeps the data directory under the machine's cache, named by the installed
programs and the database's name (a package upgrade makes a new one). A new cluster's
MariaDB renames the placeholder's tables and rows to the cluster's name at its first start
(`rename_sql`, run from MariaDB's init file before it listens). `make install` runs this;
a cluster whose copy is missing makes its database the slow way. Nothing secret is kept:
the database user's password and munge key here are throwaway; each cluster's MariaDB sets
its own password at every start.

    python -m cloudhpc.slurm.dbcache [DATABASE]
"""

from __future__ import annotations

import os
import re
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
# the cluster whose tables the copy holds: not a cluster name a template can give (those
# are lowercase letters, digits and '-'), so never a real cluster's
PLACEHOLDER = "cloudhpc_new"
# in the copy's data directory (MariaDB ignores a file there): the placeholder's tables
TABLES_FILE = "cloudhpc-cluster-tables"
FORMAT = "c2"  # copies made before the placeholder cluster (or with sys) are not used


def _identity(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "none"
    return f"{st.st_size}-{int(st.st_mtime)}"


def cached(database: str) -> Path:
    """Where the database for DATABASE made by the installed MariaDB and slurmdbd is kept."""
    return CACHE / ("-".join(_identity(p) for p in PROGRAMS) + f"-{database}-{FORMAT}")


def cluster_tables(copy: Path) -> list[str]:
    """The placeholder cluster's tables in a copy (none in a copy made without them)."""
    try:
        names = (copy / TABLES_FILE).read_text().split()
    except OSError:
        return []
    return [n for n in names if n.startswith(f"{PLACEHOLDER}_")]


def rename_sql(database: str, cluster: str, tables: list[str]) -> str:
    """SQL that gives the placeholder's tables and rows to CLUSTER. Run at every start of
    the cluster's MariaDB, after its user's statements: it changes nothing once done (and
    an error in it, in a database made otherwise, stops only the rest of it)."""
    if not tables:
        return ""
    db, old = f"`{database}`", PLACEHOLDER
    pairs = ",\n  ".join(f"{db}.`{t}` TO {db}.`{cluster}{t.removeprefix(old)}`"
                          for t in tables)
    return (f"RENAME TABLE IF EXISTS\n  {pairs};\n"
            f"UPDATE {db}.cluster_table SET name='{cluster}', creation_time=UNIX_TIMESTAMP(), "
            f"mod_time=UNIX_TIMESTAMP() WHERE name='{old}';\n"
            f"UPDATE {db}.txn_table SET name='{cluster}', timestamp=UNIX_TIMESTAMP() "
            f"WHERE name='{old}';\n"
            f"UPDATE {db}.txn_table SET cluster='{cluster}', timestamp=UNIX_TIMESTAMP() "
            f"WHERE cluster='{old}';\n"
            # slurmdbd's record of each table's layout: the table's name and the ALTER that
            # made it, which names the table too (slurmdbd finds a table's record by the
            # ALTER it would run: a record under the old name makes it alter every table)
            f"UPDATE {db}.table_defs_table SET table_name=REPLACE(table_name, "
            f"'\"{old}_', '\"{cluster}_'), definition=REPLACE(definition, "
            f"'alter table \"{old}_', 'alter table \"{cluster}_') "
            f"WHERE table_name LIKE '\"{old}\\_%';\n")


def script(work: Path, database: str, install: list[str], serve: list[str]) -> str:
    """Shell text, run in network and mount namespaces of its own: the database, slurmdbd's
    tables in it (slurmdbd logs "started" once they are made), the placeholder cluster's
    tables (sacctmgr, through munged with a throwaway key), all daemons stopped."""
    w = shlex.quote(str(work))
    opts = " ".join(shlex.quote(o) for o in install)
    serve_opts = " ".join(shlex.quote(o) for o in serve)
    db = database.replace("`", "")
    return f"""set -e
ip link set lo up
# Slurm's clients look addresses up with AI_ADDRCONFIG: the namespace needs an address
# besides loopback (a veth pair connected to nothing)
ip link add cht-db0 type veth peer name cht-db1
ip addr add 192.0.2.1/32 dev cht-db0
ip link set cht-db1 up && ip link set cht-db0 up
mkdir -p /run/munge && mount -t tmpfs -o mode=0755 tmpfs /run/munge
dd if=/dev/urandom of={w}/munge.key bs=1024 count=1 2>/dev/null && chmod 400 {w}/munge.key
munged --key-file={w}/munge.key --pid-file={w}/munged.pid --seed-file={w}/munge.seed \\
  --log-file={w}/munged.log
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
# MariaDB's sys schema (a hundred views nobody here reads): every file of the copy is made
# anew on the path of a new cluster's first start
mariadb --no-defaults --socket={w}/sock -e "DROP DATABASE IF EXISTS sys"
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
cat >{w}/slurm.conf <<CONF
ClusterName={PLACEHOLDER}
SlurmctldHost=localhost
AuthType=auth/munge
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
CONF
SLURM_CONF={w}/slurm.conf slurmdbd -D >{w}/slurmdbd.out 2>&1 &
dbd=$!
i=0
until grep -q "slurmdbd version .* started" {w}/slurmdbd.log 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 1200 ] || exit 1; sleep 0.05
done
SLURM_CONF={w}/slurm.conf sacctmgr -i add cluster {PLACEHOLDER} >{w}/sacctmgr.log 2>&1
mariadb --no-defaults --socket={w}/sock -N -e "SELECT table_name FROM \\
  information_schema.tables WHERE table_schema='{db}' AND \\
  table_name LIKE '{PLACEHOLDER}\\\\_%'" >{w}/data/{TABLES_FILE}
[ -s {w}/data/{TABLES_FILE} ]
kill $dbd; wait $dbd || true
mariadb-admin --no-defaults --socket={w}/sock shutdown
kill "$(cat {w}/munged.pid)"
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
            (runner or Runner()).run(["unshare", "--net", "--mount", "--propagation",
                                      "private", "sh", "-c",
                                      script(work, database, install, serve)], timeout=300)
        except CommandError as exc:
            logs = "".join((work / n).read_text(errors="replace")[-1500:]
                           for n in ("install.log", "mariadb.log", "slurmdbd.log",
                                     "sacctmgr.log", "munged.log")
                           if (work / n).exists())
            raise CommandError(exc.cmd[:3], exc.returncode, exc.stdout, exc.stderr + logs
                               ) from None
        try:
            os.rename(work / "data", target)
        except OSError:  # made meanwhile by another
            if not target.is_dir():
                raise
        for old in CACHE.glob(f"*-{database}*"):  # copies of other programs or formats
            if old != target and re.fullmatch(rf".*-{database}(-c\d+)?", old.name):
                shutil.rmtree(old, ignore_errors=True)
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
