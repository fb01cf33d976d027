"""Accounting: slurm.conf and slurmdbd.conf as rendered, the head's daemons, the template's
rules for accounts and an external database, associations, and the usage report's sums."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from cloudhpc.errors import CloudHPCError, CommandError
from cloudhpc.node.bootstrap import slurmctld_argv
from cloudhpc.paths import ClusterDir
from cloudhpc.plan import make_plan
from cloudhpc.report import ReportError, since_time, summarize
from cloudhpc.runner import Result
from cloudhpc.slurm import accounting
from cloudhpc.slurm.client import USAGE_FIELDS, SlurmClient, UsageRecord, parse_usage
from cloudhpc.template import Level, Template
from cloudhpc.template.validate import validate_template


def template(**over: object) -> Template:
    data: dict[str, object] = {
        "version": 1, "name": "demo",
        "compute": [{"name": "hpc", "size": "Standard_D4s_v5", "min": 2, "max": 2},
                    {"name": "big", "size": "Standard_HB120rs_v3", "min": 0, "max": 2}],
    }
    data.update(over)
    return Template.model_validate(data)


def test_slurm_conf_sends_jobs_to_slurmdbd_and_enforces_associations() -> None:
    text = accounting.conf_lines(make_plan(template()))
    assert "AccountingStorageType=accounting_storage/slurmdbd" in text
    assert "AccountingStorageHost=198.18.0.2" in text
    assert "AccountingStorageEnforce=associations" in text
    assert "PriorityType=priority/multifactor" in text
    assert "JobAcctGatherType=jobacct_gather/linux" in text
    assert "OverMemoryKill" in text  # memory is enforced without cgroups
    off = accounting.conf_lines(make_plan(template(accounting={"enabled": False})))
    assert "accounting_storage/none" in off and "slurmdbd" not in off
    assert "jobacct_gather/linux" in off  # the memory limit does not depend on accounting


def test_slurmdbd_conf_and_password_are_root_only(tmp_path: Path) -> None:
    cdir = ClusterDir(tmp_path / "clusters" / "demo")
    cdir.slurm_etc.mkdir(parents=True)
    plan = make_plan(template())
    accounting.write_files(plan, cdir)
    conf = cdir.slurm_etc / "slurmdbd.conf"
    password = (cdir.etc / "accounting.password").read_text().strip()
    for path in (conf, cdir.etc / "accounting.password", cdir.etc / "accounting-init.sql"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    text = conf.read_text()
    assert f"StoragePass={password}\n" in text and "StorageHost=127.0.0.1" in text
    assert f"IDENTIFIED BY '{password}'" in (cdir.etc / "accounting-init.sql").read_text()
    accounting.write_files(plan, cdir)  # a restart keeps the password
    assert (cdir.etc / "accounting.password").read_text().strip() == password
    assert len(password) >= 24


def test_a_new_clusters_mariadb_renames_the_copys_placeholder_cluster(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the machine's database copy (its cluster tables made for a placeholder), the
    SQL MariaDB runs at each start gives them to the cluster, after the user's password
    (an error in the renames, in a database made otherwise, cannot keep that from it)."""
    from cloudhpc.slurm import dbcache

    monkeypatch.setattr(dbcache, "CACHE", tmp_path / "cache")
    copy = dbcache.cached("slurm_acct_db")
    copy.mkdir(parents=True)
    ph = dbcache.PLACEHOLDER
    (copy / dbcache.TABLES_FILE).write_text(f"{ph}_job_table\n{ph}_assoc_table\nstray\n")
    cdir = ClusterDir(tmp_path / "clusters" / "demo")
    cdir.slurm_etc.mkdir(parents=True)
    accounting.write_files(make_plan(template()), cdir)
    sql = (cdir.etc / "accounting-init.sql").read_text()
    assert sql.index("IDENTIFIED BY") < sql.index("RENAME TABLE IF EXISTS")
    assert f"`slurm_acct_db`.`{ph}_job_table` TO `slurm_acct_db`.`demo_job_table`" in sql
    assert "stray" not in sql  # only the placeholder's tables
    assert "cluster_table SET name='demo'" in sql and f"WHERE name='{ph}'" in sql
    # a copy made before the placeholder (or none): nothing renamed
    (copy / dbcache.TABLES_FILE).unlink()
    accounting.write_files(make_plan(template()), cdir)
    assert "RENAME" not in (cdir.etc / "accounting-init.sql").read_text()
    # a template cannot name a cluster like the placeholder
    assert any(i.level is Level.ERROR for i in validate_template(
        template(name=ph), {}, []))


def test_external_database_needs_a_root_only_password_file(tmp_path: Path) -> None:
    cdir = ClusterDir(tmp_path / "clusters" / "demo")
    cdir.slurm_etc.mkdir(parents=True)
    secret = tmp_path / "db.password"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    t = template(accounting={"database": {"host": "db.mysql.database.azure.com",
                                          "password_file": str(secret)}})
    with pytest.raises(CloudHPCError, match="not root's alone"):
        accounting.write_files(make_plan(t), cdir)
    os.chmod(secret, 0o600)
    accounting.write_files(make_plan(t), cdir)
    text = (cdir.slurm_etc / "slurmdbd.conf").read_text()
    assert "StorageHost=db.mysql.database.azure.com" in text and "StoragePass=s3cret" in text
    assert [d["name"] for d in accounting.daemons(t.accounting, cdir)] == ["slurmdbd"]
    missing = template(accounting={"database": {"host": "db", "password_file": "/nope"}})
    with pytest.raises(CloudHPCError, match="/nope"):
        accounting.write_files(make_plan(missing), cdir)


def test_head_daemons_and_first_start_wait(tmp_path: Path) -> None:
    cdir = ClusterDir(tmp_path / "clusters" / "demo")
    on = accounting.daemons(template().accounting, cdir)
    assert [d["name"] for d in on] == ["mariadb", "slurmdbd"]
    assert "--bind-address=127.0.0.1" in on[0]["argv"][-1]  # the head's loopback only
    assert accounting.daemons(template(accounting={"enabled": False}).accounting, cdir) == []
    assert "6819" in slurmctld_argv(cdir, "198.18.0.2")[-1]
    assert "6819" not in slurmctld_argv(cdir)[-1]


@pytest.mark.parametrize(("accounts", "database", "message"), [
    ({"physics": ["alice"], "chem": ["alice"]}, {}, "is in accounts 'physics' and 'chem'"),
    ({"Physics!": ["alice"]}, {}, "bad account name"),
    ({"root": ["alice"]}, {}, "bad account name"),
    ({"physics": ["Alice Smith"]}, {}, "bad user name"),
    ({}, {"host": "db.example"}, "needs password_file"),
])
def test_template_accounting_rules(accounts: dict[str, list[str]], database: dict[str, str],
                                   message: str) -> None:
    t = template(accounting={"accounts": accounts, "database": database})
    errors = [f for f in validate_template(t, {}, []) if f.level is Level.ERROR]
    assert any(message in f.message for f in errors), errors


class FakeHead:
    """sacctmgr as the head would answer it: the associations it holds."""

    def __init__(self, fail: bool = False) -> None:
        self.pairs: set[tuple[str, str]] = {("root", "root")}
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv: Sequence[str], check: bool = True) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        if self.fail:
            raise CommandError(argv, 1, "", "sacctmgr: error: Problem talking to the database")
        if argv[3:5] == ["show", "associations"]:
            return Result(argv, 0, "".join(f"{a}|\n{a}|{u}\n" for a, u in self.pairs), "")
        if argv[3:5] == ["show", "accounts"]:
            return Result(argv, 0, "".join(f"{a}\n" for a, _ in self.pairs), "")
        if argv[2:4] == ["add", "user"]:
            self.pairs.add((argv[5].split("=")[1], argv[4]))
        return Result(argv, 0, "", "")


def test_every_user_gets_the_declared_or_an_own_account() -> None:
    head = FakeHead()
    keeper = accounting.Associations(SlurmClient(head),
                                     template(accounting={"accounts": {"physics": ["alice"]}})
                                     .accounting)
    keeper.ensure("alice")
    keeper.ensure("bob")
    assert {("physics", "alice"), ("bob", "bob")} <= head.pairs
    adds = [c for c in head.calls if c[2] == "add"]
    keeper.ensure("alice")  # known: no more calls
    assert len([c for c in head.calls if c[2] == "add"]) == len(adds)


def test_association_failure_is_one_clear_error() -> None:
    keeper = accounting.Associations(SlurmClient(FakeHead(fail=True)), template().accounting)
    with pytest.raises(CloudHPCError, match="cannot give user 'bob' an association"):
        keeper.ensure("bob")


def record(job_id: int, user: str, account: str, nodes: str, n: int, seconds: int,
           cpus: int = 1, uid: int = 1000) -> UsageRecord:
    return UsageRecord(job_id, uid, user, account, "hpc", n, cpus, seconds, nodes,
                       "COMPLETED", "2026-11-28T10:00:00", "2026-11-28T11:00:00")


def test_report_sums_node_seconds_and_cost_per_user_and_account() -> None:
    plan = make_plan(template())
    rows = [record(1, "alice", "physics", "hpc-[1-2]", 2, 3600, cpus=8),
            record(2, "bob", "physics", "big-1", 1, 1800),
            record(3, "alice", "physics", "hpc-1", 1, 60)]
    by_user = {r["user"]: r for r in summarize(rows, plan, "user")}
    assert by_user["alice"]["node_seconds"] == 2 * 3600 + 60
    assert by_user["alice"]["cpu_seconds"] == 8 * 3600 + 60
    assert by_user["alice"]["jobs"] == 2
    # cost: each node's size at its list price for the seconds held
    from cloudhpc.cost import hourly
    assert by_user["bob"]["cost"] == pytest.approx(hourly("Standard_HB120rs_v3") / 2, rel=1e-4)
    assert by_user["alice"]["cost"] == pytest.approx(
        hourly("Standard_D4s_v5") * (2 + 60 / 3600), rel=1e-4)
    (physics,) = summarize(rows, plan, "account")
    assert physics["node_seconds"] == 2 * 3600 + 60 + 1800


def test_since_accepts_durations_and_dates_only() -> None:
    assert since_time("1d", now=86400 * 2).startswith("1970-01-02")
    assert since_time("2026-11-01") == "2026-11-01"
    for bad in ("yesterday", "7", "2026-11-01; rm -rf /", "-1d"):
        with pytest.raises(ReportError):
            since_time(bad)


def test_usage_rows_keep_only_whole_records() -> None:
    good = "\x1f".join(["12", "1001", "alice", "physics", "hpc", "2", "4", "60", "hpc-[1-2]",
                        "COMPLETED", "2026-11-28T10:00:00", "2026-11-28T10:01:00"])
    assert len(good.split("\x1f")) == len(USAGE_FIELDS)
    broken = good.replace("1001", "x")
    extra = good + "\x1fmore"
    (only,) = parse_usage("\n".join([good, broken, extra, ""]))
    assert (only.job_id, only.uid, only.nodes, only.seconds) == (12, 1001, 2, 60)


def test_a_record_naming_fewer_nodes_than_it_had_is_priced_for_all() -> None:
    """Seen on a real cluster: a 2-node job recorded with NodeList 'hpc-1' (half its cost)."""
    plan = make_plan(template())
    from cloudhpc.cost import hourly
    (row,) = summarize([record(4, "root", "root", "hpc-1", 2, 3600)], plan, "user")
    assert row["cost"] == pytest.approx(2 * hourly("Standard_D4s_v5"), rel=1e-6)
