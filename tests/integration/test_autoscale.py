"""Node sets that scale with the queue and heal themselves, on a real cluster."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudhpc.cluster import Cluster
from cloudhpc.errors import NodeNotFound, TemplateError
from cloudhpc.jobs.model import JobState

ROOT = Path(__file__).resolve().parents[2]


def until(check: Callable[[], bool], timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


def states(c: Cluster, prefix: str) -> dict[str, str]:
    return {n.name: n.state for n in c.status() if n.name.startswith(prefix)}


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    return path


def test_zero_to_running_and_back_to_zero(auto_cluster: Cluster) -> None:
    c = auto_cluster
    assert set(states(c, "dyn-").values()) == {"powered_down"}
    start = time.time()
    job = c.submit(ROOT / "examples/jobs/mpi_pi.sh", nodes=2, ntasks_per_node=2,
                   partition="dyn", wait=True, timeout=60)
    assert job.state is JobState.COMPLETED, c.logs(job.job_id)
    assert "CHECK OK" in c.logs(job.job_id)
    # idle_timeout is 5 s: the nodes go away by themselves
    assert until(lambda: set(states(c, "dyn-").values()) == {"powered_down"}, 40)
    assert all(i.state.value == "absent" for n, i in c.backend.nodes().items()
               if n.startswith("dyn-"))
    kinds = [e["kind"] for e in c.events.read(start)]
    for kind in ("job_submitted", "node_requested", "node_launched", "node_registered",
                 "job_started", "job_ended", "node_suspending", "node_terminated"):
        assert kind in kinds, kinds


def test_capacity_limit_is_visible_without_a_loop(auto_cluster: Cluster,
                                                  tmp_path: Path) -> None:
    c = auto_cluster
    start = time.time()
    job = c.submit(script(tmp_path, "cap.sh", "#SBATCH --constraint=cap\nhostname"),
                   nodes=2, partition="pool")
    assert until(lambda: bool(c.events.read(start, {"node_failed"})), 30)
    failed = c.events.read(start, {"node_failed"})
    assert failed[0]["cause"].startswith("capacity: node set 'cap' is limited to 1")
    assert until(lambda: "limited to 1" in c.job(job.job_id).reason, 15), c.job(job.job_id)
    assert until(lambda: any(n.reason.startswith("capacity:") and n.state.startswith("down")
                             for n in c.status()), 10), c.status()
    time.sleep(6)  # no create/delete loop while the node set backs off
    launched = [e["node"] for e in c.events.read(start, {"node_launched"})]
    assert len([n for n in launched if n.startswith("cap-")]) == 1, launched
    c.cancel(job.job_id)


def test_jobs_fail_over_to_the_other_node_set(auto_cluster: Cluster, tmp_path: Path) -> None:
    c = auto_cluster
    start = time.time()
    job = c.submit(script(tmp_path, "three.sh", "hostname"), nodes=3, partition="pool")
    done = c.wait(job.job_id, timeout=120)
    assert done.state is JobState.COMPLETED
    used = done.nodes
    assert "spare" in used, used
    launched = [e["node"] for e in c.events.read(start, {"node_launched"})]
    assert len([n for n in launched if n.startswith("cap-")]) <= 2, launched


def test_dynamic_node_killed_mid_job_requeues(auto_cluster: Cluster, tmp_path: Path) -> None:
    c = auto_cluster
    start = time.time()
    job = c.submit(script(tmp_path, "long.sh", "sleep 6; echo finished on $(hostname)"),
                   nodes=1, partition="dyn")
    assert until(lambda: c.job(job.job_id).state is JobState.RUNNING, 30)
    node = c.job(job.job_id).nodes
    c.kill_node(node)
    done = c.wait(job.job_id, timeout=120)
    assert done.state is JobState.COMPLETED
    assert "finished on dyn-" in c.logs(job.job_id)
    failed = [e["node"] for e in c.events.read(start, {"node_failed"}) if "node" in e]
    assert node in failed


def test_control_plane_killed_during_resume(auto_cluster: Cluster, tmp_path: Path) -> None:
    c = auto_cluster
    assert until(lambda: set(states(c, "dyn-").values()) == {"powered_down"}, 40)
    job = c.submit(script(tmp_path, "hi.sh", "echo hi"), nodes=3, partition="dyn")
    c.kill_daemon("control-plane", "control")
    done = c.wait(job.job_id, timeout=120)
    assert done.state is JobState.COMPLETED
    assert c.backend.control_plane_running()
    half_made = [n for n, i in c.backend.nodes().items()
                 if i.state.value in ("starting", "down")]
    assert half_made == []


class Freezer(threading.Thread):
    """Stops (SIGSTOP) the first slurmd that starts on any of NODES, a few milliseconds
    after its node's supervisor started it: long before it can register with slurmctld."""

    def __init__(self, c: Cluster, nodes: list[str]) -> None:
        super().__init__(daemon=True)
        self.files = {n: c.dir.node(n) / "run" / "slurmd.pid" for n in nodes}
        self.before = {n: self._pid(n) for n in nodes}
        self.frozen: tuple[str, int] | None = None
        self.done = threading.Event()

    def _pid(self, node: str) -> int | None:
        try:
            return int(self.files[node].read_text())
        except (OSError, ValueError):
            return None

    def run(self) -> None:
        while not self.done.is_set() and self.frozen is None:
            for node in self.files:
                pid = self._pid(node)
                if pid is not None and pid != self.before[node]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                        self.frozen = (node, pid)
                    break
            time.sleep(0.001)

    def stop(self) -> None:
        self.done.set()
        self.join()
        if self.frozen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.frozen[1], signal.SIGCONT)


def test_a_node_whose_registration_was_not_taken_registers_again(auto_cluster: Cluster,
                                                                  tmp_path: Path) -> None:
    """CI, twice: a node Slurm powered up ran its slurmd, but slurmctld did not take its
    one registration (see decide.REJOIN_AFTER) and, as Slurm never pings a powering-up
    node, the job waited for ResumeTimeout. Here the node's first slurmd is stopped before
    it registers: the reconciler has it started again, and the job runs on that node."""
    c = auto_cluster
    assert until(lambda: set(states(c, "dyn-").values()) == {"powered_down"}, 40)
    start = time.time()
    freezer = Freezer(c, [f"dyn-{i}" for i in range(1, 5)])
    freezer.start()
    try:
        job = c.submit(script(tmp_path, "late.sh", "hostname"), nodes=1, partition="dyn")
        done = c.wait(job.job_id, timeout=120)
    finally:
        freezer.stop()
    assert freezer.frozen is not None
    node = freezer.frozen[0]
    assert done.state is JobState.COMPLETED
    assert done.nodes == node
    assert [e["node"] for e in c.events.read(start, {"node_rejoined"})] == [node]
    # it was not left to ResumeTimeout (the node failed, then made anew)
    assert not [e for e in c.events.read(start, {"node_failed"})
                if node in (e.get("node"), e.get("nodes"))]


def test_live_scale_keeps_jobs(auto_cluster: Cluster, tmp_path: Path) -> None:
    c = auto_cluster
    job = c.submit(script(tmp_path, "keep.sh", "sleep 3; echo kept"), nodes=1, partition="dyn")
    result = c.scale("dyn", min_nodes=1, max_nodes=6)
    assert result == {"nodeset": "dyn", "min": 1, "max": 6, "removed": []}
    assert c.plan.node("dyn-6") is not None
    assert until(lambda: states(c, "dyn-1")["dyn-1"] in ("idle", "mixed", "allocated"), 30)
    assert c.wait(job.job_id, timeout=120).state is JobState.COMPLETED
    assert "kept" in c.logs(job.job_id)
    wide = c.submit(script(tmp_path, "wide.sh", "hostname"), nodes=6, partition="dyn")
    assert c.wait(wide.job_id, timeout=120).state is JobState.COMPLETED
    with pytest.raises(TemplateError, match=r"compute\[0\].max: must be >= min"):
        c.scale("dyn", min_nodes=3, max_nodes=2)
    with pytest.raises(NodeNotFound, match="no node set 'nope'"):
        c.scale("nope", max_nodes=1)
    assert c.scale("dyn", min_nodes=0, max_nodes=4)["removed"] == ["dyn-5", "dyn-6"]
