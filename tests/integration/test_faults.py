"""Faults and bad input on real clusters: half-made clusters are removed, killed nodes show
as down, crashed daemons come back, two clusters stay isolated."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cloudhpc.cluster import Cluster
from cloudhpc.errors import ClusterExists, CommandError, ProvisionError
from cloudhpc.jobs.model import JobState
from cloudhpc.plan import short_id
from cloudhpc.providers.base import NodeState
from cloudhpc.providers.local import processes
from cloudhpc.runner import Result, Runner
from cloudhpc.state import Store
from tests.conftest import template


class FailingRunner(Runner):
    """Fails the command that configures one node's network, halfway through `up`."""

    def __init__(self, needle: str) -> None:
        self.needle = needle

    def run(self, cmd: Sequence[str], **kw: Any) -> Result:
        if self.needle in " ".join(cmd):
            raise CommandError(list(cmd), 2, "", "injected failure")
        return super().run(cmd, **kw)


def netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_failed_up_removes_everything(home: Path) -> None:
    with pytest.raises(ProvisionError, match="step 'boot nodes'.*injected failure"):
        Cluster.up(template("t-fail", "198.19.13.0/24"),
                   runner=FailingRunner("t-fail-hpc-2"))
    assert not [n for n in netns() if n.startswith("t-fail")]
    assert not Path(f"/sys/class/net/chb{short_id('t-fail')}").exists()
    assert Store().cluster("t-fail") is None
    assert not (home / "clusters" / "t-fail").exists()


def wait_state(c: Cluster, node: str, want: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = next(n.state for n in c.status() if n.name == node)
        if state == want:
            break
        time.sleep(0.2)
    return state


def test_killed_node_shows_down_and_up_repairs_it(scratch_cluster: Cluster) -> None:
    c = scratch_cluster
    ns = c.backend.nodes()["heal-2"].provider_id
    for pid in processes.pids_in_netns(ns):
        # the node's init (its supervisor) may go first, and the kernel takes the rest
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert wait_state(c, "heal-2", "down", timeout=5) == "down"
    again = Cluster.up(c.record.template)  # same template: repairs instead of failing
    assert wait_state(again, "heal-2", "idle") == "idle"
    job = again.submit(Path(__file__).parents[2] / "examples/jobs/mpi_pi.sh", nodes=2,
                       wait=True, timeout=120)
    assert job.state is JobState.COMPLETED


def test_crashed_slurmd_is_restarted(scratch_cluster: Cluster) -> None:
    """By the node's supervisor, and the node is not replaced meanwhile: the provider saw
    the dead pid in the restart's pause, counted the node down, and the reconciler replaced
    it (in CI and in ~7% of kills here, the node's jobs ended with it)."""
    c = scratch_cluster
    run = c.dir.node("heal-1") / "run"
    supervisor = processes.read_pid(run / "supervisor.pid")
    pidfile = run / "slurmd.pid"
    old = processes.read_pid(pidfile)
    assert old is not None
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes.alive(old) and time.monotonic() < deadline:
        time.sleep(0.001)
    seen = c.backend.nodes()["heal-1"]  # in the supervisor's pause before the restart
    assert seen.state is NodeState.STARTING and "slurmd" in seen.detail, seen
    new = old
    while time.monotonic() < deadline and new == old:
        time.sleep(0.1)
        new = processes.read_pid(pidfile) or old
    assert new != old and processes.alive(new)
    assert wait_state(c, "heal-1", "idle") == "idle"
    assert processes.read_pid(run / "supervisor.pid") == supervisor  # the same node
    assert c.backend.nodes()["heal-1"].state is NodeState.RUNNING


def test_up_twice(cluster: Cluster) -> None:
    start = time.monotonic()
    same = Cluster.up(cluster.record.template)
    assert same.name == cluster.name
    assert time.monotonic() - start < 5
    changed = dict(cluster.record.template)
    changed["compute"] = [{**changed["compute"][0], "min": 1, "max": 1}]
    with pytest.raises(ClusterExists, match="already exists with another template"):
        Cluster.up(changed)


def test_two_clusters_side_by_side(cluster: Cluster, tmp_path: Path) -> None:
    other = Cluster.up(template("t-two", "198.19.11.0/24", nodeset="other"))
    try:
        assert (other.dir.munge_key.read_bytes() != cluster.dir.munge_key.read_bytes())
        assert other.plan.bridge != cluster.plan.bridge
        script = tmp_path / "where.sh"
        script.write_text("#!/bin/sh\nhostname; ip -4 -o addr show eth0\n")
        for c, prefix, host in ((cluster, "198.19.10.", "hpc-"), (other, "198.19.11.", "other-")):
            job = c.submit(script, wait=True, timeout=60)
            out = c.logs(job.job_id)
            assert job.state is JobState.COMPLETED, out
            assert out.startswith(host) and prefix in out
        # no route from one cluster's nodes to the other's slurmctld ...
        probe = "timeout 2 bash -c 'echo > /dev/tcp/198.19.10.2/6817'"
        assert other.exec("head", ["bash", "-c", probe]).returncode != 0
        assert cluster.exec("hpc-1", ["bash", "-c", probe]).returncode == 0
        # ... and a credential of one cluster's munge is refused by the other's
        cred = other.exec("head", ["munge", "-n"], check=True).stdout.strip()
        own = cluster.exec("head", ["munge", "-n"], check=True).stdout.strip()
        assert cluster.exec("head", ["sh", "-c", f"echo '{own}' | unmunge"]).returncode == 0
        refused = cluster.exec("head", ["sh", "-c", f"echo '{cred}' | unmunge"])
        assert refused.returncode != 0 and "Invalid credential" in refused.stderr
    finally:
        other.down()
    assert not [n for n in netns() if n.startswith("t-two")]


def test_slurmctld_killed_keeps_queued_and_running_jobs(scratch_cluster: Cluster,
                                                       tmp_path: Path) -> None:
    c = scratch_cluster
    run = tmp_path / "r.sh"
    run.write_text("#!/bin/sh\nsleep 4; echo survived\n")
    queue = tmp_path / "q.sh"
    queue.write_text("#!/bin/sh\necho queued-ok\n")
    running = c.submit(run, nodes=2, ntasks_per_node=4)  # takes every CPU
    queued = c.submit(queue, nodes=2)
    deadline = time.monotonic() + 30
    while c.job(running.job_id).state is not JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c.job(queued.job_id).state is JobState.PENDING
    time.sleep(1)
    c.kill_daemon("head", "slurmctld")
    deadline = time.monotonic() + 15
    while not c.slurm.ping() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c.slurm.ping()  # supervised back within seconds
    for job, text in ((running, "survived"), (queued, "queued-ok")):
        assert c.wait(job.job_id, timeout=120).state is JobState.COMPLETED
        assert text in c.logs(job.job_id)
