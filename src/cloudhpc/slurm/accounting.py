"""Slurm accounting: slurmdbd and its database on the head node.

MariaDB (Debian's `mariadb-server`) runs beside slurmctld under the head's supervisor, its
data under the cluster's state directory (`accounting/`), listening on the head's loopback
only; slurmdbd reaches it with a password generated for the cluster. The database is made
by the daemon's own start (not by `up`, which does not wait for it): slurmctld keeps what
it has to record until slurmdbd answers. A template may name an external MySQL-compatible
server instead (`accounting.database.host`); then no MariaDB runs.

Pure functions here render the files and daemon command lines; `Associations` keeps every
user an association (an account of their own, or the one the template names)."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
from pathlib import Path

from cloudhpc.errors import CloudHPCError, CommandError
from cloudhpc.node import priority
from cloudhpc.node.spec import DaemonSpec
from cloudhpc.paths import ClusterDir
from cloudhpc.plan import Plan
from cloudhpc.runner import Runner
from cloudhpc.secretfile import write_secret
from cloudhpc.slurm import dbcache, jobids
from cloudhpc.slurm.client import SlurmClient
from cloudhpc.template.schema import Accounting

DBD_PORT = 6819
# the head's own directory is bound here (Debian's default place of MariaDB's socket: root
# on the head reaches the database with `mariadb`)
SOCKET_DIR = "/run/mysqld"
SOCKET = f"{SOCKET_DIR}/mysqld.sock"
DB_PORT = 3306
MARIADB_OPTIONS = dbcache.MARIADB_OPTIONS


def data_dir(cdir: ClusterDir) -> Path:
    return cdir.root / "accounting"


def golden_dir(cdir: ClusterDir) -> Path:
    """A new database as mariadb-install-db makes it, copied for each new cluster; named by
    the installed server's identity (a package upgrade makes a new one)."""
    try:
        st = os.stat("/usr/sbin/mariadbd")
        key = f"{st.st_size}-{int(st.st_mtime)}"
    except OSError:
        key = "none"
    return _home_cache(cdir) / f"mariadb-{key}"


def _home_cache(cdir: ClusterDir) -> Path:
    """The cache beside the clusters' directories (CLOUDHPC_HOME/cache)."""
    return cdir.root.parent.parent / "cache"


def spare_dir(cdir: ClusterDir, gold: Path) -> Path:
    """A copy of GOLD made ahead for the next new cluster, beside the clusters' directories
    (the same file system: taking it is a rename)."""
    return _home_cache(cdir) / f"spare-{gold.name}"


def make_spare(cdir: ClusterDir) -> None:
    """After an `up`: a copy of the machine's database for the next new cluster, made in
    the background at low priority (a copy made during `up` costs it 0.5-1 s). Nothing if
    accounting is off, external, or a spare is there already."""
    acct = settings(cdir)
    gold = dbcache.cached(acct.database.name)
    if not acct.enabled or acct.database.host is not None or not gold.is_dir():
        return
    spare = spare_dir(cdir, gold)
    for old in spare.parent.glob("spare-*"):  # of an earlier copy (programs, format)
        if old.name != spare.name and not old.name.startswith(f"{spare.name}.making."):
            shutil.rmtree(old, ignore_errors=True)
    if spare.exists():
        return
    spare.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    q = shlex.quote
    tmp = q(f"{spare}.making.") + "$$"
    Runner().start(priority.background([
        "sh", "-c", f"cp -a --sparse=always {q(str(gold))} {tmp} && "
                    f"mv -T {tmp} {q(str(spare))} 2>/dev/null; rm -rf {tmp}"]),
        spare.parent / "spare.log")


def kept_dir(home: Path, cluster: str) -> Path:
    """Where a local cluster's accounting data waits for the next cluster of its name."""
    return home / "kept" / cluster / "accounting"


def conf_lines(plan: Plan) -> str:
    """slurm.conf's accounting, job resource gathering and priority settings."""
    # job steps' memory and CPU use, read from /proc every 10 s: sstat, sacct's MaxRSS, and
    # the memory limit (OverMemoryKill ends a step that uses more than it asked for)
    gather = ("JobAcctGatherType=jobacct_gather/linux\nJobAcctGatherFrequency=task=10\n"
              "JobAcctGatherParams=OverMemoryKill\n")
    if not plan.accounting.enabled:
        return gather + "AccountingStorageType=accounting_storage/none\n"
    return gather + f"""\
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost={plan.head.address}
AccountingStoragePort={DBD_PORT}
# a job runs under an association (user, account) slurmdbd knows: an account a user names
# with --account is checked, not believed. cloudhpc gives every user it makes one
# (Associations); slurmctld's first start waits for slurmdbd (wait_for_dbd)
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
PriorityType=priority/multifactor
PriorityWeightFairshare=10000
PriorityWeightAge=1000
PriorityWeightJobSize=100
PriorityDecayHalfLife=7-0
PriorityMaxAge=7-0
"""


def _password(cdir: ClusterDir) -> str:
    path = cdir.etc / "accounting.password"
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(24), exclusive=True)
    return path.read_text().strip()


def write_files(plan: Plan, cdir: ClusterDir) -> None:
    """slurmdbd.conf (root's, 0600: it holds the database password) and, with MariaDB on
    the head, the SQL MariaDB runs at each start: the database and its user, whose
    password is set again (a kept database meets a new cluster's password)."""
    if not plan.accounting.enabled:
        return
    db = plan.accounting.database
    run = cdir.node("head") / "run"
    if db.host is None:
        golden_dir(cdir).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        password = _password(cdir)
        host, port, user = "127.0.0.1", DB_PORT, "slurm"
        # a new cluster's database is a copy of the machine's (dbcache): its placeholder
        # cluster becomes this one before MariaDB listens
        rename = dbcache.rename_sql(db.name, plan.cluster,
                                    dbcache.cluster_tables(dbcache.cached(db.name)))
        write_secret(cdir.etc / "accounting-init.sql",
                     init_sql(db.name, user, password) + rename)
    else:
        host, port, user = db.host, db.port, db.user
        password = external_password(db.password_file)
    text = f"""\
# Generated by cloudhpc for cluster {plan.cluster}; do not edit.
AuthType=auth/munge
DbdHost=head
DbdAddr={plan.head.address}
DbdPort={DBD_PORT}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost={host}
StoragePort={port}
StorageUser={user}
StorageLoc={db.name}
LogFile={cdir.logs}/slurmdbd.log
PidFile={run}/slurmdbd.pid
"""
    text += f"StoragePass={password}\n"
    write_secret(cdir.slurm_etc / "slurmdbd.conf", text)


def external_password(path: str | None) -> str:
    """The external server's password, read where the head's files are written (on Azure,
    the head VM): a root-only file, never the template itself."""
    if path is None:
        raise CloudHPCError("accounting.database.host is set but password_file is not",
                            hint="name a root-only file on the head holding the password")
    try:
        st = os.stat(path)
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise CloudHPCError(f"accounting.database.password_file {path}: {exc.strerror}",
                            hint="create it on the head node (mode 0600, owned by root)") from exc
    if st.st_uid != 0 or st.st_mode & 0o077:
        raise CloudHPCError(f"accounting.database.password_file {path} is not root's alone",
                            hint=f"chown root {path} && chmod 600 {path}")
    return text


def restore_kept(plan: Plan, cdir: ClusterDir) -> None:
    """A kept database of an earlier cluster of this name becomes this one's."""
    kept = kept_dir(cdir.root.parent.parent, plan.cluster)
    if plan.accounting.enabled and plan.accounting.keep and kept.exists() \
            and not data_dir(cdir).exists():
        os.replace(kept, data_dir(cdir))


def keep(plan: Plan, cdir: ClusterDir) -> None:
    """At `down`: with accounting.keep, the database is moved aside for the next cluster of
    this name (its daemons are stopped by then); otherwise it goes with the cluster."""
    if plan.accounting.enabled and plan.accounting.keep and data_dir(cdir).exists():
        # job ids go on from here in the next cluster (cloudhpc.slurm.jobids)
        (data_dir(cdir) / jobids.KEPT_LAST_ID).write_text(f"{jobids.highest_seen(cdir.root)}\n")
        kept = kept_dir(cdir.root.parent.parent, plan.cluster)
        kept.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.rmtree(kept, ignore_errors=True)
        os.replace(data_dir(cdir), kept)


def init_sql(database: str, user: str, password: str) -> str:
    return (f"CREATE DATABASE IF NOT EXISTS `{database}`;\n"
            f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{password}';\n"
            f"ALTER USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}';\n"
            f"GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1';\n")


def wait_for_dbd(cdir: ClusterDir, address: str, seconds: int = 120) -> str:
    """Shell text for slurmctld's start: on a cluster's first start slurmctld needs
    slurmdbd (with no state of its own it exits: "running with a database but ... no TRES
    from it"), so it waits for slurmdbd's port; later starts go on without it and send what
    they record once it answers."""
    state = shlex.quote(f"{cdir.root}/slurm/ctld/last_tres")
    probe = shlex.quote(f"exec 3<>/dev/tcp/{address}/{DBD_PORT}")
    return (f"i=0; while [ ! -e {state} ] && [ $i -lt {seconds * 20} ] && "
            f"! bash -c {probe} 2>/dev/null; do sleep 0.05; i=$((i+1)); done; ")


def settings(cdir: ClusterDir) -> Accounting:
    """The accounting section of the cluster's template (defaults if it cannot be read)."""
    try:
        return Accounting.model_validate(cdir.read_template().get("accounting", {}))
    except (OSError, ValueError):
        return Accounting()


def daemons(acct: Accounting, cdir: ClusterDir) -> list[DaemonSpec]:
    """The head's accounting daemons: MariaDB (unless external) and slurmdbd."""
    if not acct.enabled:
        return []
    run = cdir.node("head") / "run"
    socket = SOCKET  # a socket's path has at most 107 bytes: not under the state directory
    out: list[DaemonSpec] = []
    if acct.database.host is None:
        data = data_dir(cdir) / "mysql"
        fresh = data.with_name("mysql.new")
        q = shlex.quote
        # slurmdbd's tables made beforehand (`make install`: slurm/dbcache.py) if there
        gold = dbcache.cached(acct.database.name)
        if not gold.is_dir():
            gold = golden_dir(cdir)
        # made once, then renamed: a crash while it is made leaves nothing half made. The
        # first database this machine makes is kept as a copy (a copy takes 0.1 s, making
        # one 0.6 s, on the path to a new cluster's first job)
        install = (f"mariadb-install-db --no-defaults --datadir={q(str(fresh))} --user=root "
                   f"--auth-root-authentication-method=socket --skip-test-db "
                   f"{' '.join(MARIADB_OPTIONS[:2])} >{q(str(cdir.logs))}/mariadb-install.log "
                   f"2>&1 && rm -rf {q(str(gold))}.$$ && "
                   f"cp -a --sparse=always {q(str(fresh))} {q(str(gold))}.$$ && "
                   f"{{ mv -T {q(str(gold))}.$$ {q(str(gold))} 2>/dev/null || "
                   f"rm -rf {q(str(gold))}.$$; }}")
        # a spare copy made after the last `up` (make_spare) is taken whole (a rename);
        # else the copy is made here (0.5-1 s during `up`: 130 new files)
        spare = spare_dir(cdir, gold)
        make = (f"[ -d {q(str(data))} ] || {{ rm -rf {q(str(fresh))} && "
                f"mkdir -p {q(str(data.parent))} && "
                f"{{ mv -T {q(str(spare))} {q(str(fresh))} 2>/dev/null || "
                f"{{ [ -d {q(str(gold))} ] && cp -a --sparse=always {q(str(gold))} "
                f"{q(str(fresh))}; }} || {{ {install}; }}; }} && "
                f"mv {q(str(fresh))} {q(str(data))}; }}")
        serve = shlex.join(["mariadbd", "--no-defaults", "--user=root", f"--datadir={data}",
                            f"--socket={socket}", "--bind-address=127.0.0.1",
                            f"--port={DB_PORT}", f"--pid-file={run}/mariadb.pid",
                            f"--init-file={cdir.etc}/accounting-init.sql",
                            f"--log-error={cdir.logs}/mariadb.log", *MARIADB_OPTIONS])
        out.append({"name": "mariadb", "argv": ["/bin/sh", "-c", f"{make} && exec {serve}"]})
        wait = (f"until mariadb-admin --no-defaults --socket={shlex.quote(str(socket))} "
                "--silent ping >/dev/null 2>&1; do sleep 0.1; done; ")
    else:
        wait = ""
    out.append({"name": "slurmdbd", "argv": ["/bin/sh", "-c", f"{wait}exec slurmdbd -D"]})
    return out


class Associations:
    """Every user who runs jobs has an association: the account the template names for
    them, or an account of their own name. Slurm refuses the jobs of a user without one
    (AccountingStorageEnforce=associations): `ensure` is called when a token is made, before
    each API submission of a user not yet seen, and when a shell is opened for a user."""

    def __init__(self, slurm: SlurmClient, settings: Accounting) -> None:
        self.slurm = slurm
        self.settings = settings
        self.known: set[str] = set()

    def account_of(self, user: str) -> str:
        return next((a for a, users in self.settings.accounts.items() if user in users), user)

    def ensure(self, user: str) -> None:
        if not self.settings.enabled or user in self.known:
            return
        account = self.account_of(user)
        try:
            if (account, user) not in self.slurm.associations():
                if account not in self.slurm.accounts():
                    self.slurm.add_account(account)
                self.slurm.add_user(user, account)
        except CommandError as exc:
            raise CloudHPCError(
                f"accounting: cannot give user '{user}' an association in account "
                f"'{account}': {exc.stderr.strip() or exc}",
                hint="slurmdbd may be starting or down: see logs/slurmdbd.log on the head, "
                "and retry") from exc
        self.known.add(user)
