"""Issue 13: Slurm accounting as its users know it, on a real cluster with real slurmdbd and
MariaDB: sacct, sstat, sreport, sshare, sprio and sacctmgr answer; every user cloudhpc makes
has an association and cannot charge another's account; memory is scheduled and enforced;
`cloudhpc report` sums what sacct recorded (a user sees their own); jobs that end while
slurmdbd or MariaDB are down are recorded once they are back; with accounting.keep the
database outlives the cluster."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cloudhpc.api.tokens import TokenStore
from cloudhpc.cluster import Cluster
from cloudhpc.errors import CloudHPCError
from cloudhpc.jobs.model import JobState
from cloudhpc.jobs.request import JobRequest
from cloudhpc.slurm import accounting
from cloudhpc.slurm.client import ALL_STATES
from tests.conftest import template

USERS = ["cht-alice", "cht-carol"]
SPEC = {**template("t-acct", "198.19.25.0/24", count=2),
        "accounting": {"keep": True, "accounts": {"physics": ["cht-alice"]}}}


@pytest.fixture(scope="module")
def acct(home: Path) -> Iterator[Cluster]:
    c = Cluster.up(SPEC)
    try:
        yield c
    finally:
        with contextlib.suppress(CloudHPCError):
            Cluster.get("t-acct").down()
        shutil.rmtree(accounting.kept_dir(home, "t-acct").parent, ignore_errors=True)
        for user in USERS:
            subprocess.run(["userdel", user], capture_output=True)


def script(text: str) -> JobRequest:
    return JobRequest(script=text)


def head(c: Cluster, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    full = ["runuser", "-u", user, "--", *argv] if user else list(argv)
    r = c.exec("head", full)
    return subprocess.CompletedProcess(full, r.returncode, r.stdout, r.stderr)


def sacct(c: Cluster, job_id: int, fields: str = "JobIDRaw,User,Account,State") -> list[str]:
    out = head(c, "sacct", "-X", "-n", "-P", "-j", str(job_id), f"--format={fields}").stdout
    return out.strip().split("|") if out.strip() else []


def wait_sacct(c: Cluster, job_id: int, state: str, timeout: float = 90) -> list[str]:
    deadline = time.monotonic() + timeout
    row: list[str] = []
    while time.monotonic() < deadline:
        row = sacct(c, job_id)
        if row and row[-1].split(" ")[0] == state:
            return row
        time.sleep(1)
    raise AssertionError(f"sacct: job {job_id} not {state}: {row}")


def test_sacct_records_each_users_jobs_under_their_account(acct: Cluster) -> None:
    alice = acct.submit(script("#!/bin/bash\necho hi\n"), user="cht-alice", wait=True, timeout=60)
    carol = acct.submit(script("#!/bin/bash\necho hi\n"), user="cht-carol", wait=True, timeout=60)
    assert wait_sacct(acct, alice.job_id, "COMPLETED")[1:3] == ["cht-alice", "physics"]
    assert wait_sacct(acct, carol.job_id, "COMPLETED")[1:3] == ["cht-carol", "cht-carol"]
    assocs = head(acct, "sacctmgr", "-nP", "show", "assoc", "format=account,user").stdout
    assert "physics|cht-alice" in assocs.splitlines()
    shares = head(acct, "sshare", "-a", "-P").stdout
    assert "cht-alice" in shares and "physics" in shares
    for argv in (["sreport", "-P", "cluster", "utilization"], ["sprio"],
                 ["sacctmgr", "-nP", "show", "cluster"]):
        result = head(acct, *argv)
        assert result.returncode == 0, (argv, result.stderr)
    assert "t-acct" in head(acct, "sacctmgr", "-nP", "show", "cluster").stdout


def test_a_user_cannot_charge_another_account(acct: Cluster) -> None:
    """--account names an account; Slurm checks it against the user's associations."""
    acct.give_association("cht-carol")
    refused = head(acct, "sbatch", "--account=physics", "--wrap=true", "--chdir=/tmp",
                   user="cht-carol")
    assert refused.returncode != 0
    assert "Invalid account" in refused.stderr, refused.stderr
    own = head(acct, "sbatch", "--parsable", "--wrap=true", "--chdir=/tmp", user="cht-carol")
    assert own.returncode == 0, own.stderr


def test_sstat_shows_a_running_job(acct: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "busy.sh"
    script.write_text("#!/bin/bash\nsrun python3 -c 'x = bytearray(50 << 20); "
                      "import time; time.sleep(25)'\n")
    job = acct.submit(script)
    deadline = time.monotonic() + 60
    row = ""
    while time.monotonic() < deadline:
        out = head(acct, "sstat", "-n", "-P", "-j", f"{job.job_id}.0",
                   "--format=JobID,MaxRSS,AveCPU").stdout.strip()
        if out and out.split("|")[1]:
            row = out
            break
        time.sleep(1)
    acct.cancel(job.job_id)
    assert row.startswith(f"{job.job_id}.0|"), row
    rss = row.split("|")[1]
    assert rss.endswith(("K", "M")) and float(rss[:-1]) > 0, row


def test_memory_is_scheduled_and_enforced(acct: Cluster, tmp_path: Path) -> None:
    hog = tmp_path / "hog.sh"
    hog.write_text("#!/bin/bash\n#SBATCH --mem=100M\npython3 -c '\nimport time\n"
                   "a = bytearray(400 << 20)\nfor i in range(0, len(a), 4096): a[i] = 1\n"
                   "time.sleep(40)\nprint(\"survived\")'\n")
    done = acct.submit(hog, wait=True, timeout=120)
    assert done.state is JobState.FAILED, (done.state, done.reason)
    assert "survived" not in acct.logs(done.job_id)
    assert "memory" in acct.logs(done.job_id).lower()
    fits = acct.submit(script("#!/bin/bash\n#SBATCH --mem=1G\necho fits\n"), wait=True, timeout=60)
    assert fits.state is JobState.COMPLETED
    too_big = head(acct, "sbatch", "--mem=900G", "--wrap=true")
    assert too_big.returncode != 0 and "node configuration" in too_big.stderr.lower(), \
        too_big.stderr


def test_report_sums_what_sacct_recorded(acct: Cluster) -> None:
    job = acct.submit(script("#!/bin/bash\nsleep 2\n"), user="cht-alice", nodes=2, wait=True,
                      timeout=60)
    wait_sacct(acct, job.job_id, "COMPLETED")
    elapsed = int(sacct(acct, job.job_id, "ElapsedRaw")[0])
    data = acct.report("1d", "user")
    alice = next(r for r in data["rows"] if r["user"] == "cht-alice")
    # every state named: sacct's window alone selects by eligible time, which Slurm leaves
    # 'Unknown' for some jobs (seen for this one), and would miss them; and by user name
    # here (`-u` missed the same jobs)
    rows = head(acct, "sacct", "-X", "-n", "-P", "-a", "-S", data["since"], "-E",
                data["until"], "-s", ALL_STATES, "--format=JobIDRaw,User").stdout.split()
    mine = [int(r.split("|")[0]) for r in rows if r.endswith("|cht-alice")]
    assert job.job_id in mine, rows
    assert alice["jobs"] == len(mine)
    assert alice["node_seconds"] >= 2 * elapsed
    by_account = {r["account"]: r for r in acct.report("1d", "account")["rows"]}
    assert by_account["physics"]["node_seconds"] == alice["node_seconds"]
    assert sum(d["jobs"] for d in data["days"]) == sum(r["jobs"] for r in data["rows"])
    cli = subprocess.run([sys.executable, "-m", "cloudhpc.cli", "report", "-c", "t-acct",
                          "--since", "1d", "--json"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    by_cli = {r["user"]: (r["jobs"], r["node_seconds"]) for r in json.loads(cli.stdout)["rows"]}
    assert by_cli == {r["user"]: (r["jobs"], r["node_seconds"]) for r in data["rows"]}
    bad = subprocess.run([sys.executable, "-m", "cloudhpc.cli", "report", "-c", "t-acct",
                          "--since", "last tuesday"], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "--since" in bad.stderr


def test_a_user_reports_only_their_own_jobs(acct: Cluster) -> None:
    store = TokenStore(acct.store.path)
    _, carol = store.create(acct.name, "cht-carol")
    _, admin = store.create(acct.name, "cht-alice", admin=True)

    def api(token: str) -> dict[str, object]:
        r = httpx.get(acct.api_url + "/api/report", params={"since": "1d"}, timeout=30,
                      verify=str(acct.dir.api_cert),
                      headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return dict(r.json())

    users = {row["user"] for row in api(carol)["rows"]}  # type: ignore[attr-defined]
    assert users == {"cht-carol"}
    everyone = {row["user"] for row in api(admin)["rows"]}  # type: ignore[attr-defined]
    assert {"cht-alice", "cht-carol"} <= everyone


@pytest.mark.parametrize("daemon", ["slurmdbd", "mariadb"])
def test_jobs_ending_while_accounting_is_down_are_recorded(acct: Cluster, daemon: str) -> None:
    acct.kill_daemon("head", daemon)
    job = acct.submit(script("#!/bin/bash\necho while-down\n"), wait=True, timeout=90)
    assert job.state is JobState.COMPLETED
    wait_sacct(acct, job.job_id, "COMPLETED", timeout=120)


def test_a_failed_step_fails_the_job(acct: Cluster) -> None:
    """Slurm alone records this job COMPLETED (its last command succeeds)."""
    done = acct.submit(script("#!/bin/bash\nsrun --mpi=pmix /no/such/program\necho after\n"),
                       nodes=2, wait=True, timeout=90)
    assert done.state is JobState.FAILED, (done.state, done.reason)
    assert f"job step {done.job_id}.0 failed" in acct.logs(done.job_id)
    fine = acct.submit(script("#!/bin/bash\nsrun --mpi=pmix hostname\n"), nodes=2, wait=True,
                       timeout=90)
    assert fine.state is JobState.COMPLETED, (fine.state, fine.reason)


def test_the_cluster_owns_the_tables_its_database_copy_came_with(acct: Cluster) -> None:
    """A new cluster's database is the machine's copy, whose cluster tables were made for
    a placeholder cluster: its MariaDB gave them, and the placeholder's rows, to this
    cluster before slurmdbd started, and slurmdbd and sacct use them."""
    from cloudhpc.slurm import dbcache

    def sql(query: str) -> list[str]:
        r = head(acct, "mariadb", "-N", "-e", f"USE slurm_acct_db; {query}")
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert dbcache.cluster_tables(dbcache.cached("slurm_acct_db")), "no copy with tables"
    assert sql("SELECT name FROM cluster_table") == ["t-acct"]
    old = dbcache.PLACEHOLDER.replace("_", "\\_")
    assert sql(f"SHOW TABLES LIKE '{old}%'") == []
    assert sql(f"SELECT count(*) FROM txn_table WHERE name='{dbcache.PLACEHOLDER}' "
               f"OR cluster='{dbcache.PLACEHOLDER}'") == ["0"]
    assert "t-acct_job_table" in sql("SHOW TABLES")
    listed = head(acct, "sacctmgr", "-n", "-P", "list", "cluster", "format=cluster,controlport")
    assert listed.stdout.split() == ["t-acct|6817"], listed
    # slurmdbd found each table as its record of layouts says (a record names its table):
    # it altered none (an ALTER of each of twenty tables cost ~0.6 s of `up`; it rewrites
    # the table's record with the time)
    created = int(sql("SELECT creation_time FROM cluster_table")[0])
    altered = sql(f"SELECT table_name FROM table_defs_table WHERE mod_time >= {created}")
    assert altered == [], altered


def test_a_new_cluster_takes_the_spare_database_copy_made_after_the_last_up(
        acct: Cluster, home: Path) -> None:
    """After an `up`, a copy of the machine's database is made in the background for the
    next new cluster, which takes it whole (a rename: the same directory) instead of
    copying 130 files on the path of its `up`; its accounting works."""
    from cloudhpc.slurm import dbcache

    spare = accounting.spare_dir(acct.dir, dbcache.cached("slurm_acct_db"))
    deadline = time.monotonic() + 60
    while not spare.is_dir() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert spare.is_dir(), "no spare copy after up"
    inode = spare.stat().st_ino
    other = Cluster.up({**template("t-spare", "198.19.29.0/24", count=1),
                        "accounting": {"enabled": True}})
    try:
        assert (accounting.data_dir(other.dir) / "mysql").stat().st_ino == inode
        job = other.submit(script("#!/bin/bash\necho spare\n"), wait=True, timeout=60)
        assert wait_sacct(other, job.job_id, "COMPLETED")[0] == str(job.job_id)
    finally:
        other.down()


def test_kept_accounting_outlives_the_cluster(acct: Cluster, home: Path) -> None:
    job = acct.submit(script("#!/bin/bash\necho before\n"), wait=True, timeout=60)
    wait_sacct(acct, job.job_id, "COMPLETED")
    acct.down()
    assert accounting.kept_dir(home, "t-acct").exists()
    again = Cluster.up(SPEC)
    row = wait_sacct(again, job.job_id, "COMPLETED", timeout=60)
    assert row[0] == str(job.job_id)
    later = again.submit(script("#!/bin/bash\necho after\n"), wait=True, timeout=60)
    assert later.job_id > job.job_id  # ids go on from the kept record


def test_the_database_copy_for_new_clusters_has_slurmdbds_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make install` makes, with the installed MariaDB and slurmdbd, the database every new
    cluster copies: slurmdbd's own tables are in it (its first start made them in about a
    second on the path of `up`), nothing of the making is left, and it is made once."""
    from cloudhpc.slurm import dbcache
    from cloudhpc.slurm.accounting import MARIADB_OPTIONS

    monkeypatch.setattr(dbcache, "CACHE", tmp_path / "cache")
    made = dbcache.make("slurm_acct_db", MARIADB_OPTIONS[:2], MARIADB_OPTIONS)
    assert made == dbcache.cached("slurm_acct_db") and made.parent == tmp_path / "cache"
    tables = {p.stem for p in (made / "slurm_acct_db").glob("*.frm")}
    assert {"tres_table", "qos_table", "acct_table", "user_table", "cluster_table",
            "txn_table"} <= tables, tables
    # and the tables of a cluster, made for a placeholder cluster by slurmdbd itself
    # (`sacctmgr add cluster`), which a new cluster's MariaDB renames
    listed = dbcache.cluster_tables(made)
    assert f"{dbcache.PLACEHOLDER}_job_table" in listed and len(listed) >= 15, listed
    assert set(listed) <= tables
    # the making's network and mounts were its own
    assert "cht-db" not in subprocess.run(["ip", "link"], capture_output=True,
                                          text=True).stdout
    assert subprocess.run(["findmnt", "-n", "-t", "tmpfs", "/run/munge"],
                          capture_output=True).returncode != 0
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [made.name]
    assert dbcache.make("slurm_acct_db", [], []) == made  # made once
    assert dbcache.cached("other_db") != made
