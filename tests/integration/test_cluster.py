"""A real local cluster: Slurm daemons in namespaces, MPI across nodes, node isolation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloudhpc.cluster import Cluster
from cloudhpc.errors import JobError, NodeNotFound
from cloudhpc.jobs.model import JobState
from cloudhpc.node import bootstrap
from cloudhpc.runner import Runner

ROOT = Path(__file__).resolve().parents[2]


def test_static_nodes_idle(cluster: Cluster) -> None:
    states = {n.name: n.state for n in cluster.status()}
    assert states == {"head": "running", "storage": "running", "hpc-1": "idle", "hpc-2": "idle"}
    # made once slurmctld listened: `up` and the nodes' slurmd waited for it
    assert bootstrap.ctld_listening(cluster.dir).exists()


def test_mpi_job_across_two_nodes(cluster: Cluster) -> None:
    job = cluster.submit(ROOT / "examples/jobs/mpi_pi.sh", nodes=2, ntasks_per_node=2,
                         wait=True, timeout=120)
    out = cluster.logs(job.job_id)
    assert job.state is JobState.COMPLETED, out
    assert "CHECK OK" in out
    hosts = re.findall(r"rank \d+ of 4 on (\S+)", out)
    assert sorted(hosts) == ["hpc-1", "hpc-1", "hpc-2", "hpc-2"]


def test_nodes_have_own_hostname_hosts_and_paths(cluster: Cluster) -> None:
    assert cluster.exec("hpc-1", ["hostname"]).stdout.strip() == "hpc-1"
    hosts = cluster.exec("hpc-2", ["cat", "/etc/hosts"]).stdout
    assert "198.19.10.2\thead" in hosts
    cluster.exec("hpc-1", ["sh", "-c", "echo shared-ok > /shared/probe; "
                           "echo mine > /scratch/probe"], check=True)
    assert cluster.exec("hpc-2", ["cat", "/shared/probe"]).stdout.strip() == "shared-ok"
    assert cluster.exec("hpc-2", ["cat", "/scratch/probe"]).returncode != 0
    ping = cluster.exec("hpc-1", ["ping", "-c1", "-W1", "hpc-2"])
    assert ping.returncode in (0, 127)  # 127: ping not installed; reachability via MPI test


def test_job_lifecycle_and_cancel(cluster: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "sleep.sh"
    script.write_text("#!/bin/sh\necho started; sleep 60\n")
    job = cluster.submit(script, nodes=1)
    assert job.state in (JobState.PENDING, JobState.RUNNING)
    assert any(j.job_id == job.job_id for j in cluster.jobs())
    cluster.cancel(job.job_id)
    done = cluster.wait(job.job_id, timeout=30)
    assert done.state is JobState.CANCELLED
    with pytest.raises(JobError, match="already ended"):
        cluster.cancel(job.job_id)


def test_failed_job_reports_exit_code(cluster: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/sh\necho before failing\nexit 3\n")
    job = cluster.submit(script, wait=True, timeout=60)
    assert job.state is JobState.FAILED
    assert job.exit_code == 3
    assert cluster.logs(job.job_id) == "before failing\n"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"partition": "nope"}, "no partition 'nope'"),
    ({"nodes": 3}, "at most 2 nodes"),
    ({"ntasks_per_node": 0}, "at least 1"),
])
def test_bad_submissions(cluster: Cluster, tmp_path: Path, kwargs: dict[str, object],
                         message: str) -> None:
    script = tmp_path / "ok.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    before = len(cluster.jobs())
    with pytest.raises(JobError, match=message):
        cluster.submit(script, **kwargs)  # type: ignore[arg-type]
    assert len(cluster.jobs()) == before


def test_missing_script_and_unknown_node(cluster: Cluster) -> None:
    with pytest.raises(JobError, match="not found"):
        cluster.submit("/nonexistent/job.sh")
    with pytest.raises(NodeNotFound, match="no node 'zzz'"):
        cluster.exec("zzz", ["true"])
    with pytest.raises(JobError, match="no job 999999"):
        cluster.job(999999)


def test_finished_job_reports_node_seconds_and_cost(cluster: Cluster, tmp_path: Path) -> None:
    s = tmp_path / "nap.sh"
    s.write_text("#!/bin/sh\nsleep 2\n")
    job = cluster.submit(s, nodes=2, wait=True, timeout=120)
    assert job.state is JobState.COMPLETED
    # the seconds it held its nodes, as Slurm's accounting recorded them (or, while
    # slurmdbd has not heard of its end, its start and end times)
    elapsed = cluster.exec("head", ["sacct", "-X", "-n", "-P", "-j", str(job.job_id),
                                    "--format=ElapsedRaw,State"]).stdout.strip()
    seconds = job.end_time - job.start_time
    if elapsed.endswith("|COMPLETED"):
        assert job.node_seconds in (2 * seconds, 2 * int(elapsed.split("|")[0]))
    assert seconds >= 1 and job.node_seconds >= 2
    assert job.cost_usd == pytest.approx(job.node_seconds * 0.192 / 3600, rel=1e-3)  # D4s_v5


def test_slurm_messages_are_not_held_for_delayed_acks(cluster: Cluster) -> None:
    """Slurm writes a message's length, then its body: with Nagle's algorithm the body
    waits for the ACK of the length, which Linux delays by 40 ms, so a request and its
    reply between slurmctld and slurmdbd took ~90 ms (eight of them at slurmctld's start).
    Every route of the cluster's traffic, inside each node and on the host's bridge, ACKs
    at once."""
    for node in ("head", "hpc-1"):
        ns = f"{cluster.plan.cluster}-{node}"
        spec = cluster.plan.node(node)
        assert spec is not None
        addr = spec.address
        routes = {line.split(" dev ")[0]: line for line in Runner().run(
            ["ip", "-n", ns, "route", "show", "table", "all"]).stdout.splitlines()}
        for dst in (f"local {addr}", "local 127.0.0.0/8", cluster.plan.cidr):
            assert "quickack 1" in routes.get(dst, ""), (node, dst, routes)
    host = Runner().run(["ip", "route", "show", cluster.plan.cidr]).stdout
    assert "quickack 1" in host, host
