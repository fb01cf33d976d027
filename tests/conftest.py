"""Real local clusters for the integration tests; everything they create is removed, even
when a test fails (the session ends with a sweep of every test namespace and bridge)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudhpc.cluster import Cluster
from cloudhpc.plan import short_id
from cloudhpc.state import Store

PREFIX = "t-"
TEST_CLUSTERS = ["t-main", "t-two", "t-fail", "t-heal", "t-cli", "t-auto", "t-web", "t-cinit",
                 "t-sec", "t-int", "t-tok", "t-lost", "t-soak", "t-acct",
                 "t-clients"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        for item in items:
            if "integration" in str(item.fspath) or "security" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason="integration tests need root"))


CLUSTER_FIXTURES = ("cluster", "auto_cluster", "scratch_cluster")
KEEP_LOGS = "CLOUDHPC_TEST_KEEP_LOGS"  # a directory: failed tests' cluster logs are copied there


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed test on a real cluster shows what Slurm saw: node states and reasons, the
    queue, and the end of slurmctld's log (CI keeps only what the run printed)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name in CLUSTER_FIXTURES:
        c = getattr(item, "funcargs", {}).get(name)
        if isinstance(c, Cluster):
            report.sections.append((f"cluster {c.name} when {item.name} failed", diagnose(c)))
            keep = os.environ.get(KEEP_LOGS)
            if keep and c.dir.logs.is_dir():
                shutil.copytree(c.dir.logs, Path(keep) / item.name / c.name,
                                dirs_exist_ok=True)


def diagnose(c: Cluster) -> str:
    parts = []
    for argv in (["sinfo", "-N", "-h", "-o", "%N %T %E"],
                 ["squeue", "-h", "-o", "%i %T %D %N %r"]):
        try:
            result = c.exec("head", argv, timeout=10)
            parts.append(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}")
        except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the failure
            parts.append(f"$ {' '.join(argv)}: {exc}")
    log = c.dir.logs / "slurmctld.log"
    if log.exists():
        tail = log.read_text(errors="replace").splitlines()[-40:]
        parts.append("slurmctld.log (last 40 lines):\n" + "\n".join(tail))
    return "\n".join(parts)


def template(name: str, cidr: str, nodeset: str = "hpc", count: int = 2,
             size: str = "Standard_D4s_v5") -> dict[str, Any]:
    return {"version": 1, "name": name, "network": {"cidr": cidr},
            "compute": [{"name": nodeset, "size": size, "min": count, "max": count}]}


def sweep() -> None:
    """Kill and delete whatever a test cluster may have left (namespaces, links)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        ns = line.split()[0] if line.strip() else ""
        if not ns.startswith(PREFIX):
            continue
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for name in TEST_CLUSTERS:
        sid = short_id(name)
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True,
                               text=True).stdout
        for row in links.splitlines():
            link = row.split(":")[1].strip().split("@")[0]
            if link.startswith((f"chb{sid}", f"chv{sid}")):
                subprocess.run(["ip", "link", "del", link], capture_output=True)


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("cloudhpc-home")
    users_before = cht_users()
    old = os.environ.get("CLOUDHPC_HOME")
    os.environ["CLOUDHPC_HOME"] = str(root)
    try:
        yield root
    finally:
        for record in Store(root / "state.db").clusters():
            try:
                Cluster(record, Store(root / "state.db")).down()
            except Exception as exc:  # noqa: BLE001 - keep cleaning
                print(f"cleanup of {record.name} failed: {exc}")
        sweep()
        if old is None:
            os.environ.pop("CLOUDHPC_HOME", None)
        else:
            os.environ["CLOUDHPC_HOME"] = old
        left = [ln for ln in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                            text=True).stdout.splitlines()
                if ln.startswith(PREFIX)]
        assert not left, f"test namespaces left behind: {left}"
        users = sorted(cht_users() - users_before)
        for user in users:
            subprocess.run(["userdel", user], capture_output=True)
        assert not users, f"test users left behind (now removed): {users}"


def cht_users() -> set[str]:
    """This machine's users that tests make (every test user's name starts with cht-)."""
    return {line.split(":", 1)[0] for line in Path("/etc/passwd").read_text().splitlines()
            if line.startswith("cht-")}


@pytest.fixture(scope="session")
def cluster(home: Path) -> Iterator[Cluster]:
    """One shared two-node cluster for the tests that do not break it."""
    c = Cluster.up(template("t-main", "198.19.10.0/24"))
    try:
        yield c
    finally:
        c.down()


@pytest.fixture()
def scratch_cluster(home: Path) -> Iterator[Cluster]:
    """A throw-away two-node cluster for tests that kill things."""
    c = Cluster.up(template("t-heal", "198.19.12.0/24", nodeset="heal"))
    try:
        yield c
    finally:
        c.down()


AUTOSCALE = {
    "version": 1, "name": "t-auto", "network": {"cidr": "198.19.15.0/24"},
    "compute": [
        {"name": "dyn", "size": "Standard_D4s_v5", "min": 0, "max": 4, "idle_timeout": 5,
         "resume_timeout": 30},
        {"name": "cap", "size": "Standard_D2s_v5", "min": 0, "max": 3, "partition": "pool",
         "idle_timeout": 5, "resume_timeout": 30},
        {"name": "spare", "size": "Standard_D2s_v5", "min": 0, "max": 2, "partition": "pool",
         "idle_timeout": 5, "resume_timeout": 30},
    ],
    "local": {"capacity": {"cap": 1}},
}


@pytest.fixture(scope="module")
def auto_cluster(home: Path) -> Iterator[Cluster]:
    """A cluster whose node sets start at zero nodes."""
    c = Cluster.up(AUTOSCALE)
    try:
        yield c
    finally:
        c.down()
