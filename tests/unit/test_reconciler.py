"""The reconciler's job rules as tables, and its tick with fakes of Slurm and the control
plane: what it does, and that one failing step does not stop the others."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from cloudhpc.autoscale import jobrules
from cloudhpc.autoscale.decide import LOST_PREFIX
from cloudhpc.autoscale.jobrules import Release, Submitted
from cloudhpc.autoscale.protocol import LaunchReply, NodeReply, RejoinReply, TerminateReply
from cloudhpc.autoscale.reconciler import Reconciler
from cloudhpc.events import EventLog
from cloudhpc.jobs.submissions import Submission
from cloudhpc.slurm.client import PendingJob, SlurmNode
from cloudhpc.slurm.jobcomp import FinishedJobs

# -- job rules ------------------------------------------------------------------------------


def sub(name: str, job: int | None, uid: int = 1001, again: int | None = None) -> Submitted:
    return Submitted(name, uid, job, ("--chdir=/shared/jobs/" + name, "a.sh"), again)


@pytest.mark.parametrize(("submitted", "in_slurm", "finished", "lost"), [
    ([sub("s1", 1)], {"s1": [(1, 1001)]}, set(), []),        # Slurm has it (by its id)
    ([sub("s1", 1)], {"s1": [(7, 1001)]}, set(), []),        # ... whatever its job id
    ([sub("s1", 1)], {}, set(), ["s1"]),                     # forgotten in the crash
    ([sub("s1", 1)], {"s1": [(1, 666)]}, set(), ["s1"]),     # another user's comment
    ([sub("s1", 1)], {}, {1}, []),                           # it ended before the crash
    ([sub("s1", 1, again=9)], {}, {9}, []),                  # resubmitted, and ended
    ([sub("s1", None)], {}, set(), []),                      # never accepted: client retries
    ([Submitted("s1", 0, 1, ())], {}, set(), []),            # no request recorded
    ([sub("s1", 1), sub("s2", 2)], {"s2": [(2, 1001)]}, set(), ["s1"]),
])
def test_lost_jobs(submitted: list[Submitted], in_slurm: dict[str, list[tuple[int, int]]],
                   finished: set[int], lost: list[str]) -> None:
    assert [s.sub for s in jobrules.lost_jobs(submitted, in_slurm, finished)] == lost


HELD = "launch failed requeued held"


@pytest.mark.parametrize(("pending", "released"), [
    (PendingJob(5, "BeginTime", 1), [Release(5, False, "BeginTime")]),  # requeued
    (PendingJob(5, "BeginTime", 0), []),       # a user's --begin: left alone
    (PendingJob(5, "Resources", 2), []),       # waits for nodes: Slurm's business
    (PendingJob(5, HELD, 1), [Release(5, True, HELD)]),  # a stale launch met its run
    (PendingJob(5, HELD, 4), [Release(5, True, HELD)]),
    (PendingJob(5, HELD, 5), []),              # its launch fails every time: stays held
    (PendingJob(5, "job requeued in held state", 1), []),  # an admin's requeuehold
])
def test_jobs_to_release(pending: PendingJob, released: list[Release]) -> None:
    assert jobrules.jobs_to_release([pending]) == released


@pytest.mark.parametrize(("flags", "reason", "resumed"), [
    ({"DRAIN"}, "Duplicate jobid", True),
    ({"DRAIN"}, "admin: broken disk", False),
    (set(), "Duplicate jobid", False),         # resumed already, the reason kept
])
def test_nodes_to_resume(flags: set[str], reason: str, resumed: bool) -> None:
    out = jobrules.nodes_to_resume([SlurmNode("n-1", "idle", frozenset(flags), reason)])
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
        self.subs: dict[str, list[tuple[int, int]]] = {}
        self.queue_rows: list[dict[str, Any]] = []

    def nodes(self, now: float | None = None) -> list[SlurmNode]:
        return self.node_list

    def job_ids(self, states: str = "all") -> set[int]:
        return set(self.ids)

    def pending(self) -> list[PendingJob]:
        if self.fail_pending:
            raise RuntimeError("squeue: slurm_load_jobs error: Unable to contact slurm "
                               "controller")
        return self.pending_jobs

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

    def jobs(self) -> list[dict[str, Any]]:
        return self.queue_rows

    def submissions(self) -> dict[str, list[tuple[int, int]]]:
        return {k: list(v) for k, v in self.subs.items()}

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

    def rejoin(self, nodes: str) -> RejoinReply:
        self.calls.append(("rejoin", nodes))
        return RejoinReply(rejoined=[nodes])

    def nodes(self) -> dict[str, NodeReply]:
        return self.state


class FakeSubmissions:
    def __init__(self) -> None:
        self.rows: list[Submission] = []

    def since(self, when: float) -> list[Submission]:
        return [r for r in self.rows if r.created >= when]

    def resubmitted(self, sub: str, job_id: int) -> None:
        self.rows = [dataclasses.replace(r, resubmitted_as=job_id) if r.sub == sub else r
                     for r in self.rows]


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
    subs = FakeSubmissions()
    recorded: list[tuple[int, int]] = []
    rec = Reconciler({"hpc-1": False, "burst-1": True}, slurm, control, events,  # type: ignore[arg-type]
                     FinishedJobs(tmp_path / "jobcomp.txt"), lambda: pid[0],
                     subs, lambda old, new: recorded.append((old, new)), Clock())  # type: ignore[arg-type]
    rec.fake_submissions = subs  # type: ignore[attr-defined]
    rec.recorded = recorded  # type: ignore[attr-defined]
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
    assert ("start_now", 7) in slurm.calls
    # the new node takes no job until slurmctld's retries to the lost one are through
    assert ("update", "hpc-1", "state=drain", "reason=cloudhpc: replaced node settling") in \
        slurm.calls and ("update", "hpc-1", "state=resume") not in slurm.calls
    assert kinds(events) == ["node_replaced"]
    rec.clock.now += 10  # type: ignore[attr-defined]
    control.state["hpc-1"] = NodeReply(state="running", nodeset="hpc", detail="", age=1.0)
    rec.tick()
    assert slurm.calls[-1] == ("update", "hpc-1", "state=resume")


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
    now = Clock().now
    rec.fake_submissions.rows = [  # type: ignore[attr-defined]
        Submission("20261129-000001-aaaaaa", 1001, "t", None,
                   ["--chdir=/shared/jobs/x", "/shared/jobs/x/a.sh"], now - 5, 3, None),
        Submission("20261129-000002-bbbbbb", 1001, "t", None, ["/shared/jobs/y/b.sh"],
                   now - 4, 4, None)]
    slurm.subs = {"20261129-000002-bbbbbb": [(4, 1001)]}
    rec.tick()  # first look: the controller's pid
    assert not [c for c in slurm.calls if c[0] == "sbatch"]
    pid[0] = "11"  # restarted, and the first submission is gone
    rec.tick()
    assert [c for c in slurm.calls if c[0] == "sbatch"] == [
        ("sbatch", "--chdir=/shared/jobs/x", "/shared/jobs/x/a.sh")]
    resubmitted = events.read(kinds={"job_resubmitted"})
    assert [(e["job"], e["new_job"]) for e in resubmitted] == [(3, 101)]
    assert rec.recorded == [(3, 101)]  # type: ignore[attr-defined]
    slurm.subs["20261129-000001-aaaaaa"] = [(101, 1001)]
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
    slurm.queue_rows = [{"job_id": 5, "state_reason": "NodeFail"}]  # kept from the queue
    rec.tick()
    ended = events.read(kinds={"job_ended"})
    assert [(e["job"], e["state"], e["reason"]) for e in ended] == [(5, "completed",
                                                                      "NodeFail")]
    assert kinds(events) == ["job_started", "job_ended"]
    assert json.loads(json.dumps(ended[0]))["nodes"] == "hpc-1"


def test_a_stale_launch_outside_any_crash_is_undone(tmp_path: Path) -> None:
    """CI's soak, job 103: slurmd restarted while slurmctld launched the job to it; the
    job was requeued and ran on the same node, then slurmctld's retry of the first launch
    reached it. slurmd refused the second copy and had Slurm requeue the running job held
    ('launch failed requeued held'), and slurmctld drained the node ('Duplicate jobid').
    No slurmctld crash: the job stayed pending forever though it had run. The wrapper makes
    a release safe (a run that ended is not run again), and the node is healthy."""
    rec, slurm, control, events = reconciler(tmp_path, ["10"])
    slurm.node_list = [SlurmNode("hpc-1", "idle", frozenset({"DRAIN"}), "Duplicate jobid"),
                       SlurmNode("burst-1", "idle", frozenset({"DRAIN"}), "admin: disk")]
    control.state = {"hpc-1": NodeReply(state="running", nodeset="hpc", detail="", age=9.0)}
    slurm.pending_jobs = [PendingJob(103, "launch failed requeued held", 1)]
    rec.tick()
    assert ("release", 103) in slurm.calls and ("start_now", 103) in slurm.calls
    assert ("update", "hpc-1", "state=resume") in slurm.calls
    assert not [c for c in slurm.calls if c[:2] == ("update", "burst-1")]  # an admin's
    assert [e["job"] for e in events.read(kinds={"job_released"})] == [103]
    assert [e["node"] for e in events.read(kinds={"node_resumed"})] == ["hpc-1"]


def test_a_registration_slurmctld_did_not_take_is_sent_again_once_per_wait(
        tmp_path: Path) -> None:
    """CI: a node Slurm powered up ran its slurmd, but slurmctld dropped the registration
    (the boot it reported was a second older than the resume request) and never asked
    again: the node stayed powering up until ResumeTimeout, the job pending."""
    rec, slurm, control, events = reconciler(tmp_path, ["10"])
    stuck = SlurmNode("burst-1", "idle", frozenset({"CLOUD", "POWERING_UP", "NOT_RESPONDING"}))
    slurm.node_list = [SlurmNode("hpc-1", "idle"), stuck]
    control.state = {"hpc-1": NodeReply(state="running", nodeset="hpc", detail="", age=99.0),
                     "burst-1": NodeReply(state="running", nodeset="burst", detail="",
                                          age=4.0)}
    rec.tick()
    assert control.calls == []  # a node this young may be registering now
    control.state["burst-1"]["age"] = 12.0
    rec.tick()
    assert control.calls == [("rejoin", "burst-1")]
    assert [e["node"] for e in events.read(kinds={"node_rejoined"})] == ["burst-1"]
    rec.clock.now += 3  # type: ignore[attr-defined]
    control.state["burst-1"]["age"] = 15.0
    rec.tick()  # the new slurmd gets its own time to register
    assert control.calls == [("rejoin", "burst-1")]
    rec.clock.now += 8  # type: ignore[attr-defined]
    rec.tick()
    assert control.calls == [("rejoin", "burst-1")] * 2
    slurm.node_list = [SlurmNode("hpc-1", "idle"), SlurmNode("burst-1", "idle",
                                                             frozenset({"CLOUD"}))]
    rec.clock.now += 20  # type: ignore[attr-defined]
    rec.tick()  # registered: nothing more
    assert len(control.calls) == 2
