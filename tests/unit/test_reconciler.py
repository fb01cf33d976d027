"""The reconciler's job rules as tables, and its tick with fakes of Slurm and the control
plane: what it does, and that one failing step does not stop the others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloudhpc.autoscale import jobrules
from cloudhpc.autoscale.decide import LOST_PREFIX
from cloudhpc.autoscale.jobrules import Release, Submitted
from cloudhpc.autoscale.protocol import LaunchReply, NodeReply, TerminateReply
from cloudhpc.autoscale.reconciler import Reconciler
from cloudhpc.events import EventKind, EventLog
from cloudhpc.slurm.client import Drained, PendingJob, SlurmNode
from cloudhpc.slurm.jobcomp import FinishedJobs

# -- job rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(("submitted", "known", "resubmitted", "lost"), [
    ([Submitted(1, ("a.sh",))], {1}, set(), []),             # Slurm has it
    ([Submitted(1, ("a.sh",))], set(), set(), [1]),          # forgotten in the crash
    ([Submitted(1, ("a.sh",))], set(), {1}, []),             # already resubmitted
    ([Submitted(1, ())], set(), set(), []),                  # no request recorded
    ([Submitted(1, ("a",)), Submitted(2, ("b",))], {2}, set(), [1]),
])
def test_lost_jobs(submitted: list[Submitted], known: set[int], resubmitted: set[int],
                   lost: list[int]) -> None:
    assert [s.job_id for s in jobrules.lost_jobs(submitted, known, resubmitted)] == lost


@pytest.mark.parametrize(("pending", "recovering", "released"), [
    (PendingJob(5, "BeginTime", 1), False, [Release(5, False, "BeginTime")]),  # requeued
    (PendingJob(5, "BeginTime", 0), False, []),       # a user's --begin: left alone
    (PendingJob(5, "Resources", 2), False, []),       # waits for nodes: Slurm's business
    (PendingJob(5, "launch failed requeued held", 1), True,
     [Release(5, True, "launch failed requeued held")]),  # a crash's duplicate launch
    (PendingJob(5, "launch failed requeued held", 1), False, []),  # outside the window
])
def test_jobs_to_release(pending: PendingJob, recovering: bool,
                         released: list[Release]) -> None:
    assert jobrules.jobs_to_release([pending], recovering) == released


@pytest.mark.parametrize(("reason", "recovering", "resumed"), [
    ("Duplicate jobid", True, True),
    ("Duplicate jobid", False, False),
    ("admin: broken disk", True, False),
])
def test_nodes_to_resume(reason: str, recovering: bool, resumed: bool) -> None:
    out = jobrules.nodes_to_resume([Drained("n-1", reason)], recovering)
    assert bool(out) is resumed


@pytest.mark.parametrize(("running", "started", "finished", "events", "after"), [
    ({1}, set(), [], [("started", 1)], {1}),
    ({1}, {1}, [], [], {1}),
    (set(), {1}, [(1, {"state": "completed"})], [("ended", 1)], set()),
    # started and ended between two looks: both events
    (set(), set(), [(2, {"state": "failed", "start_time": 10})],
     [("started", 2), ("ended", 2)], set()),
])
def test_job_events(running: set[int], started: set[int],
                    finished: list[tuple[int, dict[str, object]]],
                    events: list[tuple[str, int]], after: set[int]) -> None:
    out, now = jobrules.job_events(running, started, finished)
    assert [(e.kind, e.job_id) for e in out] == events
    assert now == after


# -- the tick, with fakes -------------------------------------------------------------------
class FakeSlurm:
    def __init__(self) -> None:
        self.node_list: list[SlurmNode] = []
        self.ids: set[int] = set()
        self.pending_jobs: list[PendingJob] = []
        self.calls: list[tuple[Any, ...]] = []
        self.fail_pending = False
        self.next_id = 100

    def nodes(self, now: float | None = None) -> list[SlurmNode]:
        return self.node_list

    def job_ids(self, states: str = "all") -> set[int]:
        return set(self.ids)

    def pending(self) -> list[PendingJob]:
        if self.fail_pending:
            raise RuntimeError("squeue: slurm_load_jobs error: Unable to contact slurm "
                               "controller")
        return self.pending_jobs

    def drained(self) -> list[Drained]:
        return []

    def jobs_on(self, node: str) -> list[int]:
        return [7]

    def update_node(self, node: str, *settings: str) -> bool:
        self.calls.append(("update", node, *settings))
        return True

    def start_now(self, job_id: int) -> None:
        self.calls.append(("start_now", job_id))

    def release(self, job_id: int) -> None:
        self.calls.append(("release", job_id))

    def take_out(self, node: str, reason: str) -> None:
        self.calls.append(("take_out", node))

    def sbatch(self, options: list[str], script: str) -> int:
        self.calls.append(("sbatch", *options, script))
        self.next_id += 1
        return self.next_id


class FakeControl:
    def __init__(self) -> None:
        self.state: dict[str, NodeReply] = {}
        self.calls: list[tuple[str, str]] = []

    def launch(self, nodes: str) -> LaunchReply:
        self.calls.append(("launch", nodes))
        return LaunchReply(launched=[nodes], failed=[])

    def terminate(self, nodes: str) -> TerminateReply:
        self.calls.append(("terminate", nodes))
        return TerminateReply(terminated=[nodes])

    def nodes(self) -> dict[str, NodeReply]:
        return self.state


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def reconciler(tmp_path: Path, pid: list[str]) -> tuple[Reconciler, FakeSlurm, FakeControl,
                                                         EventLog]:
    slurm, control = FakeSlurm(), FakeControl()
    events = EventLog(tmp_path / "events.jsonl")
    rec = Reconciler({"hpc-1": False, "burst-1": True}, slurm, control, events,  # type: ignore[arg-type]
                     FinishedJobs(tmp_path / "jobcomp.txt"), lambda: pid[0], Clock())
    return rec, slurm, control, events


def kinds(events: EventLog) -> list[str]:
    return [e["kind"] for e in events.read()]


def test_tick_replaces_a_lost_static_node(tmp_path: Path) -> None:
    rec, slurm, control, events = reconciler(tmp_path, ["10"])
    slurm.node_list = [SlurmNode("hpc-1", "allocated"), SlurmNode(
        "burst-1", "idle", frozenset({"CLOUD", "POWERED_DOWN"}))]
    control.state = {"hpc-1": NodeReply(state="down", nodeset="hpc", detail="slurmd is not "
                                        "running", age=50.0),
                     "burst-1": NodeReply(state="absent", nodeset="burst", detail="", age=0)}
    actions = rec.tick()
    assert [(a.act.value, a.node) for a in actions] == [("replace", "hpc-1")]
    assert control.calls == [("terminate", "hpc-1"), ("launch", "hpc-1")]
    assert ("update", "hpc-1", "state=down",
            f"reason={LOST_PREFIX}: slurmd is not running") in slurm.calls
    assert ("start_now", 7) in slurm.calls and ("update", "hpc-1", "state=resume") in \
        slurm.calls
    assert kinds(events) == ["node_replaced"]


def test_a_failing_step_does_not_stop_the_others(tmp_path: Path) -> None:
    """slurmctld does not answer `squeue -t PD` (releasing requeued jobs fails): the node
    step still runs and replaces the lost node."""
    rec, slurm, control, events = reconciler(tmp_path, ["10"])
    slurm.fail_pending = True
    slurm.node_list = [SlurmNode("hpc-1", "down")]
    control.state = {"hpc-1": NodeReply(state="absent", nodeset="hpc", detail="", age=0)}
    rec.tick()
    assert ("launch", "hpc-1") in control.calls
    assert "node_replaced" in kinds(events)


def test_tick_resubmits_jobs_lost_in_a_controller_crash(tmp_path: Path) -> None:
    pid = ["10"]
    rec, slurm, control, events = reconciler(tmp_path, pid)
    events.emit(EventKind.JOB_SUBMITTED, job=3,
                argv=["--chdir=/shared/jobs/x", "/shared/jobs/x/a.sh"])
    events.emit(EventKind.JOB_SUBMITTED, job=4,
                argv=["/shared/jobs/y/b.sh"])
    slurm.ids = {4}
    rec.tick()  # first look: the controller's pid
    assert not [c for c in slurm.calls if c[0] == "sbatch"]
    pid[0] = "11"  # restarted, and job 3 is gone
    rec.tick()
    assert [c for c in slurm.calls if c[0] == "sbatch"] == [
        ("sbatch", "--chdir=/shared/jobs/x", "/shared/jobs/x/a.sh")]
    resubmitted = events.read(kinds={"job_resubmitted"})
    assert [(e["job"], e["new_job"]) for e in resubmitted] == [(3, 101)]
    pid[0] = "12"  # another restart: not resubmitted twice
    rec.tick()
    assert len([c for c in slurm.calls if c[0] == "sbatch"]) == 1


def test_tick_reflects_jobs_from_the_record_of_finished_jobs(tmp_path: Path) -> None:
    rec, slurm, control, events = reconciler(tmp_path, ["10"])
    slurm.ids = {5}
    rec.tick()
    (tmp_path / "jobcomp.txt").write_text(
        "JobId=5 UserId=root(0) GroupId=root(0) Name=a JobState=COMPLETED Partition=hpc "
        "TimeLimit=UNLIMITED StartTime=2026-11-29T10:00:00 EndTime=2026-11-29T10:00:05 "
        "NodeList=hpc-1 NodeCnt=1 ProcCnt=1 WorkDir=/shared ReservationName= Tres= "
        "Account= QOS= WcKey= Cluster=c SubmitTime=2026-11-29T10:00:00 "
        "EligibleTime=2026-11-29T10:00:00 DerivedExitCode=0:0 ExitCode=0:0 \n")
    slurm.ids = set()
    rec.tick()
    ended = events.read(kinds={"job_ended"})
    assert [(e["job"], e["state"]) for e in ended] == [(5, "completed")]
    assert kinds(events) == ["job_started", "job_ended"]
    assert json.loads(json.dumps(ended[0]))["nodes"] == "hpc-1"
