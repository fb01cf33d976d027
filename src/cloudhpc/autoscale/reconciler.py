"""The reconciler daemon on the head node (supervised like the Slurm daemons): reflects
Slurm's and the provider's views into events, then acts on the decisions of the pure rules
(`decide` for nodes, `jobrules` for jobs). Each step of a tick runs on its own: one that
fails is logged and the others still run.

    python -m cloudhpc.autoscale.reconciler CLUSTER_DIR
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cloudhpc.autoscale import jobrules
from cloudhpc.autoscale.decide import LOST_PREFIX, REJOIN_AFTER, Act, Action, ProviderNode, decide
from cloudhpc.autoscale.protocol import (
    ControlClient,
    LaunchReply,
    NodeReply,
    RejoinReply,
    TerminateReply,
)
from cloudhpc.events import EventKind, EventLog
from cloudhpc.jobs.model import from_keyvalues
from cloudhpc.jobs.submissions import Submissions
from cloudhpc.node import priority
from cloudhpc.paths import ClusterDir
from cloudhpc.plan import make_plan
from cloudhpc.slurm.client import SlurmClient, SlurmNode, on_this_node
from cloudhpc.slurm.conf import SlurmPaths
from cloudhpc.slurm.jobcomp import FinishedJobs
from cloudhpc.state import Store
from cloudhpc.template import Template

log = logging.getLogger("cloudhpc.reconciler")

INTERVAL = 3.0
LOOK_BACK = 3600.0  # submissions this recent are checked after a slurmctld restart
SETTLE = 6.0  # seconds a replaced node takes no job (see act)
SETTLING = "cloudhpc: replaced node settling"
COOLDOWN = 60.0
UP_STATES = {"idle", "allocated", "mixed", "completing"}


class Control(Protocol):
    """The control plane, as the reconciler uses it (autoscale.protocol.ControlClient)."""

    def launch(self, nodes: str) -> LaunchReply: ...
    def terminate(self, nodes: str) -> TerminateReply: ...
    def rejoin(self, nodes: str) -> RejoinReply: ...
    def nodes(self) -> dict[str, NodeReply]: ...


def describe(node: SlurmNode | None) -> str:
    if node is None:
        return "unknown"
    if "POWERED_DOWN" in node.flags:
        return "powered_down"
    return "down" if node.state == "down" else node.state


class Reconciler:
    def __init__(self, dynamic: dict[str, bool], slurm: SlurmClient, control: Control,
                 events: EventLog, finished: FinishedJobs,
                 controller_pid: Callable[[], str | None], submissions: Submissions,
                 record_job: Callable[[int, int], None], clock: Any = time,
                 seen: Path | None = None) -> None:
        """DYNAMIC: every compute node of the plan -> whether it is a CLOUD node.
        CONTROLLER_PID: slurmctld's current pid and start time (a change: it restarted).
        RECORD_JOB(old, new): cloudhpc's job record for a job submitted again.
        SEEN: where the slurmctld this reconciler last saw is kept, so that a restart of
        slurmctld while the reconciler itself was down is still noticed."""
        self.dynamic = dynamic
        self.slurm = slurm
        self.control = control
        self.events = events
        self.finished = finished
        self.controller_pid = controller_pid
        self.submissions = submissions
        self.record_job = record_job  # (old job id, new job id): cloudhpc's job record
        self.clock = clock
        self.last: dict[str, str] = {}
        self.started: set[int] = set()
        self.seen = seen
        self.ctld_pid: str | None = None
        if seen is not None:
            try:
                self.ctld_pid = seen.read_text().strip() or None
            except OSError:
                self.ctld_pid = None
        self.settling: dict[str, float] = {}  # replaced node -> when it may take jobs
        self.rejoined: dict[str, float] = {}  # node -> when its slurmd was told to register

    @classmethod
    def on_head(cls, cluster_dir: Path) -> Reconciler:
        cdir = ClusterDir(cluster_dir)
        plan = make_plan(Template.model_validate_json(cdir.template.read_text()))
        pidfile = cdir.node("head") / "run" / "slurmctld.pid"

        def ctld_pid() -> str | None:
            """slurmctld's pid and start time (a pid alone may be reused)."""
            try:
                pid = pidfile.read_text().strip()
                with open(f"/proc/{pid}/stat") as fh:
                    return f"{pid}:{fh.read().rsplit(')', 1)[1].split()[19]}"
            except (OSError, IndexError):
                return None

        db = cluster_dir.parent.parent / "state.db"  # CLOUDHPC_HOME/clusters/NAME
        store = Store(db)

        def record_job(old: int, new: int) -> None:
            rec = store.job(cdir.root.name, old)
            if rec is not None:  # the same output file (see check_restart)
                store.add_job(cdir.root.name, dataclasses.replace(rec, job_id=new))

        return cls({n.name: n.dynamic for n in plan.compute()}, SlurmClient(on_this_node()),
                   ControlClient(str(cluster_dir)), EventLog(cdir.events),
                   FinishedJobs(SlurmPaths(str(cdir.root)).jobcomp, from_end=True), ctld_pid,
                   Submissions(db, cdir.root.name), record_job,
                   seen=cdir.node("head") / "run" / "reconciler-seen-slurmctld")

    # -- one tick -------------------------------------------------------------------------
    def tick(self) -> list[Action]:
        """Every step, each isolated; returns the node actions taken."""
        actions: list[Action] = []
        for name, step in (("check restart", self.check_restart),
                           ("resume settled nodes", self.resume_settled),
                           ("release requeued jobs", self.release_requeued),
                           ("reflect jobs", self.reflect_jobs)):
            self._step(name, step)
        self._step("nodes", lambda: actions.extend(self.nodes_step()))
        return actions

    def _step(self, name: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:  # noqa: BLE001 - one failing step must not stop the others
            log.exception("step '%s' failed", name)

    def nodes_step(self) -> list[Action]:
        # The provider's view first: a node the provider has must then already be known to
        # Slurm as powering up (Slurm marks it before it calls ResumeProgram).
        provider = {name: ProviderNode(name, info["state"], info.get("detail", ""),
                                       info.get("age", 0.0))
                    for name, info in self.control.nodes().items()}
        slurm = {n.name: n for n in self.slurm.nodes(self.clock.time())}
        self.reflect_nodes(slurm)
        for node in jobrules.nodes_to_resume(list(slurm.values())):
            if self.slurm.update_node(node.name, "state=resume"):
                self.events.emit(EventKind.NODE_RESUMED, node=node.name, cause=node.reason)
                slurm[node.name] = dataclasses.replace(
                    node, flags=node.flags - {"DRAIN"}, reason="")
        actions = decide(slurm, provider, self.dynamic, COOLDOWN)
        for action in actions:
            self._step(f"{action.act.value} {action.node}", functools.partial(self.act, action))
        return actions

    # -- events ---------------------------------------------------------------------------
    def reflect_nodes(self, slurm: dict[str, SlurmNode]) -> None:
        """Turn node changes seen since the last tick into events."""
        for name in self.dynamic:
            state = describe(slurm.get(name))
            before = self.last.get(name)
            if before is not None and state != before:
                if state in UP_STATES and before in ("powered_down", "unknown", "down"):
                    self.events.emit(EventKind.NODE_REGISTERED, node=name, state=state)
                elif state == "powered_down":
                    self.events.emit(EventKind.NODE_SUSPENDED, node=name)
                elif state == "idle":
                    self.events.emit(EventKind.NODE_IDLE, node=name)
                elif state == "down":
                    self.events.emit(EventKind.NODE_DOWN, node=name,
                                     reason=slurm[name].reason if name in slurm else "")
            self.last[name] = state

    def reflect_jobs(self) -> None:
        running = self.slurm.job_ids("RUNNING")
        finished: list[tuple[int, dict[str, object]]] = []
        for line in self.finished.new().splitlines():
            if line.startswith("JobId="):
                job = from_keyvalues(line)
                finished.append((job.job_id, {"state": job.state.value,
                                              "exit_code": job.exit_code, "nodes": job.nodes,
                                              "at": job.end_time,
                                              "start_time": job.start_time}))
        if finished:  # Slurm's reason (NodeFail, JobLaunchFailure ...) is in the queue for
            # MinJobAge after the end, never in the jobcomp record: keep it in the event
            reasons = {row["job_id"]: row["state_reason"] for row in self.slurm.jobs()
                       if row.get("state_reason") not in (None, "", "None")}
            for job_id, fields in finished:
                if job_id in reasons:
                    fields["reason"] = reasons[job_id]
        events, self.started = jobrules.job_events(running, self.started, finished)
        for event in events:
            kind = EventKind.JOB_STARTED if event.kind == "started" else EventKind.JOB_ENDED
            self.events.emit(kind, job=event.job_id, **dict(event.fields))

    # -- job rules ------------------------------------------------------------------------
    def check_restart(self) -> None:
        """After slurmctld restarts (a crash), submit again what it lost, found by
        cloudhpc's submission ids (jobrules.lost_jobs)."""
        pid = self.controller_pid()
        if pid is None or pid == self.ctld_pid:
            return  # unchanged, or slurmctld is starting again (look at the next tick)
        if self.ctld_pid is None:  # the first look, ever
            self._saw(pid)
            return
        now = self.clock.time()
        in_slurm = self._in_slurm()
        if in_slurm is None:
            return  # not marked seen: tried again at the next tick
        submitted = [jobrules.Submitted(s.sub, s.uid, s.job_id, tuple(s.argv),
                                        s.resubmitted_as)
                     for s in self.submissions.since(now - LOOK_BACK)]
        for lost in jobrules.lost_jobs(submitted, in_slurm, self.finished.ids()):
            # the first job's output file: its first run may have gone on (the node kept
            # it) and written there; `logs` of either id shows the one output
            options = [o.replace("%j", str(lost.job_id)) if o.startswith("--output=") else o
                       for o in lost.argv[:-1]]
            new = self.slurm.sbatch(options, lost.argv[-1])
            self.submissions.resubmitted(lost.sub, new)
            if lost.job_id is not None:
                self.record_job(lost.job_id, new)
            self.events.emit(EventKind.JOB_RESUBMITTED, job=lost.job_id, new_job=new,
                             sub=lost.sub, cause="lost by slurmctld in a crash")
            log.warning("job %s (submission %s) lost by slurmctld: submitted again as %s",
                        lost.job_id, lost.sub, new)
        self._saw(pid)

    def _saw(self, pid: str) -> None:
        self.ctld_pid = pid
        if self.seen is not None:
            self.seen.write_text(pid)

    def _in_slurm(self, wait: float = 30.0) -> dict[str, list[tuple[int, int]]] | None:
        """Slurm's jobs by submission id, once slurmctld answers again."""
        deadline = self.clock.monotonic() + wait
        while True:
            try:
                return self.slurm.submissions()
            except Exception:  # noqa: BLE001 - slurmctld is starting again
                if self.clock.monotonic() > deadline:
                    return None
                self.clock.sleep(0.2)

    def resume_settled(self) -> None:
        now = self.clock.time()
        for node, until in list(self.settling.items()):
            if now >= until:
                self.slurm.update_node(node, "state=resume")
                del self.settling[node]

    def release_requeued(self) -> None:
        for release in jobrules.jobs_to_release(self.slurm.pending()):
            if release.unhold:
                self.slurm.release(release.job_id)
            self.slurm.start_now(release.job_id)
            self.events.emit(EventKind.JOB_RELEASED, job=release.job_id, cause=release.cause)

    # -- node actions ---------------------------------------------------------------------
    def act(self, action: Action) -> None:
        node = action.node
        if action.act is Act.REPLACE:
            jobs = self.slurm.jobs_on(node)
            self.slurm.update_node(node, "state=down",
                                   f"reason={LOST_PREFIX}: {action.why[:80]}")
            for job in jobs:  # requeued: they may run on other nodes at once
                self.slurm.start_now(job)
            # The new node answers at the old one's address: slurmctld's retries of the
            # kill it sent the lost node's jobs would reach it and kill such a job relaunched
            # there (measured: 0.9 s after the new slurmd started). It takes no job until
            # those are through.
            self.slurm.update_node(node, "state=drain", f"reason={SETTLING}")
            self.control.terminate(node)
            result = self.control.launch(node)
            if node in result.get("launched", []):
                self.settling[node] = self.clock.time() + SETTLE
                self.events.emit(EventKind.NODE_REPLACED, node=node, cause=action.why)
        elif action.act is Act.FAIL_DYNAMIC:
            self.slurm.take_out(node, f"{LOST_PREFIX}: {action.why[:80]}")
            self.events.emit(EventKind.NODE_FAILED, node=node, cause=action.why)
        elif action.act is Act.REMOVE_ORPHAN:
            self.control.terminate(node)
            self.events.emit(EventKind.ORPHAN_REMOVED, node=node, cause=action.why)
        elif action.act is Act.RETRY:
            self.slurm.update_node(node, "state=resume")
            self.events.emit(EventKind.NODE_RETRY, node=node, cause=action.why)
        elif action.act is Act.REJOIN:
            now = self.clock.time()
            if now - self.rejoined.get(node, float("-inf")) < REJOIN_AFTER:
                return  # its new slurmd gets the same time to register
            self.rejoined[node] = now
            if node in self.control.rejoin(node)["rejoined"]:
                self.events.emit(EventKind.NODE_REJOINED, node=node, cause=action.why)


def main(cluster_dir: str) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    rec = Reconciler.on_head(Path(cluster_dir))
    log.info("reconciling every %.0f s", INTERVAL)
    rec.tick()
    priority.serving()  # started with the least CPU share (cloudhpc.node.priority)
    while True:
        time.sleep(INTERVAL)
        rec.tick()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
