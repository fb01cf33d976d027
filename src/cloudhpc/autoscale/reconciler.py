"""The reconciler daemon on the head node (supervised like the Slurm daemons): reflects
Slurm's and the provider's views into events, then acts on the decisions of `decide`.

    python -m cloudhpc.autoscale.reconciler CLUSTER_DIR
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from cloudhpc.autoscale.decide import LOST_PREFIX, Act, Action, ProviderNode, SlurmNode, decide
from cloudhpc.autoscale.power import PATH, call, jobs_on, scontrol, take_out
from cloudhpc.events import EventLog
from cloudhpc.jobs.model import Job, from_keyvalues
from cloudhpc.plan import make_plan
from cloudhpc.template import Template

INTERVAL = 3.0
COOLDOWN = 60.0
UP_STATES = {"idle", "allocated", "mixed", "completing"}


def run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, env={"PATH": PATH},
                          timeout=60, check=True).stdout


def scontrol_update(node: str, *settings: str) -> None:
    subprocess.run(["scontrol", "update", f"nodename={node}", *settings], env={"PATH": PATH},
                   capture_output=True, timeout=60, check=False)


def slurm_nodes(now: float) -> dict[str, SlurmNode]:
    out = {}
    for raw in json.loads(run(["sinfo", "--json"]))["nodes"]:
        changed = float(raw.get("reason_changed_at") or 0)
        out[raw["name"]] = SlurmNode(raw["name"], raw.get("state", "unknown"),
                                     frozenset(raw.get("state_flags", [])),
                                     raw.get("reason", ""), now - changed if changed else 0.0)
    return out


def running_jobs() -> set[int]:
    text = run(["squeue", "-h", "--states=RUNNING", "-o", "%i"])
    return {int(j) for j in text.split() if j.isdigit()}


def describe(node: SlurmNode | None) -> str:
    if node is None:
        return "unknown"
    if "POWERED_DOWN" in node.flags:
        return "powered_down"
    return "down" if node.state == "down" else node.state


class Reconciler:
    def __init__(self, cluster_dir: Path) -> None:
        self.dir = cluster_dir
        template = Template.model_validate_json((cluster_dir / "etc" / "template.json")
                                                .read_text())
        self.plan = make_plan(template)
        self.dynamic = {n.name: n.dynamic for n in self.plan.compute()}
        self.events = EventLog(cluster_dir / "events.jsonl")
        self.last: dict[str, str] = {}
        self.started: set[int] = set()
        self.ctld_pid: str | None = None
        self.recovering_until = 0.0
        self.jobcomp = cluster_dir / "slurm" / "jobcomp.txt"
        self.offset = self.jobcomp.stat().st_size if self.jobcomp.exists() else 0

    def tick(self) -> list[Action]:
        now = time.time()
        self.check_restart()
        self.release_requeued()
        # The provider's view first: a node the provider has must then already be known to
        # Slurm as powering up (Slurm marks it before it calls ResumeProgram).
        provider = {name: ProviderNode(name, info["state"], info.get("detail", ""),
                                       info.get("age", 0.0))
                    for name, info in call(str(self.dir), "GET", "/nodes").items()}
        slurm = slurm_nodes(now)
        self.reflect(slurm)
        actions = decide(slurm, provider, self.dynamic, COOLDOWN)
        for action in actions:
            self.act(action)
        return actions

    def reflect(self, slurm: dict[str, SlurmNode]) -> None:
        """Turn changes seen since the last tick into events."""
        for name in self.dynamic:
            state = describe(slurm.get(name))
            before = self.last.get(name)
            if before is not None and state != before:
                if state in UP_STATES and before in ("powered_down", "unknown", "down"):
                    self.events.emit("node_registered", node=name, state=state)
                elif state == "powered_down":
                    self.events.emit("node_suspended", node=name)
                elif state == "idle":
                    self.events.emit("node_idle", node=name)
                elif state == "down":
                    self.events.emit("node_down", node=name,
                                     reason=slurm[name].reason if name in slurm else "")
            self.last[name] = state
        for job_id in sorted(running_jobs() - self.started):
            self.events.emit("job_started", job=job_id)
            self.started.add(job_id)
        for done in self.finished_jobs():
            if done.job_id not in self.started:
                self.events.emit("job_started", job=done.job_id, at=done.start_time)
            self.started.discard(done.job_id)
            self.events.emit("job_ended", job=done.job_id, state=done.state.value,
                             exit_code=done.exit_code, nodes=done.nodes, at=done.end_time)

    def check_restart(self) -> None:
        """After slurmctld restarts (a crash), resubmit cloudhpc jobs it lost: Slurm saves
        its state a few seconds after accepting a job, and a crash in that window loses it."""
        pid = (self.dir / "nodes" / "head" / "run" / "slurmctld.pid").read_text().strip()
        before, self.ctld_pid = self.ctld_pid, pid
        if before is None or before == pid:
            return
        self.recovering_until = time.time() + 300
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                known = {int(j) for j in run(["squeue", "-h", "--states=all", "-o", "%i"])
                         .split() if j.isdigit()}
                break
            except subprocess.SubprocessError:
                time.sleep(0.2)
        else:
            return
        if self.jobcomp.exists():
            known |= {int(line.split()[0].removeprefix("JobId="))
                      for line in self.jobcomp.read_text().splitlines()
                      if line.startswith("JobId=")}
        moved = {e["job"] for e in self.events.read(kinds={"job_resubmitted"})}
        for event in self.events.read(kinds={"job_submitted"}):
            job = event["job"]
            if job in known or job in moved or "argv" not in event:
                continue
            out = run(["sbatch", "--parsable", *event["argv"]]).strip().split(";")[0]
            self.events.emit("job_resubmitted", job=job, new_job=int(out),
                             cause="lost by slurmctld in a crash")

    def release_requeued(self) -> None:
        """Slurm requeues a job whose node failed (down, or never powered up) with a begin
        time minutes away; cloudhpc has already replaced or taken out that node, so let the
        job run now. (Its restart count tells these jobs from ones a user gave --begin.)

        After a slurmctld crash, a job started in the seconds before it (its start was not
        saved yet) comes back as pending while its first run goes on; the relaunch meets that
        run, drains the node ('Duplicate jobid') and holds the job. Within 300 s of a crash
        such nodes are resumed and such jobs released: once the first run is over, the job
        runs again and completes."""
        recovering = time.time() < self.recovering_until
        if recovering:
            for row in run(["sinfo", "-h", "-N", "-t", "drain", "-o", "%N|%E"]).splitlines():
                node, _, reason = row.partition("|")
                if reason.startswith("Duplicate jobid"):
                    scontrol_update(node, "state=resume")
                    self.events.emit("node_resumed", node=node, cause=reason)
        rows = run(["squeue", "-h", "-t", "PD", "-O", "JobID:|,Reason:|,RestartCnt:|"])
        for row in rows.splitlines():
            job, reason, restarts = (row.split("|") + ["", "", ""])[:3]
            if recovering and reason.startswith("launch failed requeued held"):
                run(["scontrol", "release", job])
            elif not (reason == "BeginTime" and restarts.strip() not in ("", "0")):
                continue
            scontrol("update", f"jobid={job}", "starttime=now")  # skip the requeue delay
            self.events.emit("job_released", job=int(job), cause=reason)

    def finished_jobs(self) -> list[Job]:
        """Jobs Slurm recorded as finished since the last tick (its jobcomp file)."""
        if not self.jobcomp.exists():
            return []
        with open(self.jobcomp, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [from_keyvalues(line) for line in data[:end].decode(errors="replace")
                .splitlines() if line.startswith("JobId=")]

    def act(self, action: Action) -> None:
        node = action.node
        if action.act is Act.REPLACE:
            jobs = jobs_on(node)
            scontrol_update(node, "state=down", f"reason={LOST_PREFIX}: {action.why[:80]}")
            for job in jobs:
                scontrol("update", f"jobid={job}", "starttime=now")
            call(str(self.dir), "POST", "/terminate", {"nodes": node})
            result = call(str(self.dir), "POST", "/launch", {"nodes": node})
            if node in result.get("launched", []):
                scontrol_update(node, "state=resume")
                self.events.emit("node_replaced", node=node, cause=action.why)
        elif action.act is Act.FAIL_DYNAMIC:
            take_out(node, f"{LOST_PREFIX}: {action.why[:80]}")
            self.events.emit("node_failed", node=node, cause=action.why)
        elif action.act is Act.REMOVE_ORPHAN:
            call(str(self.dir), "POST", "/terminate", {"nodes": node})
            self.events.emit("orphan_removed", node=node, cause=action.why)
        elif action.act is Act.RETRY:
            scontrol_update(node, "state=resume")
            self.events.emit("node_retry", node=node, cause=action.why)



def main(cluster_dir: str) -> int:
    rec = Reconciler(Path(cluster_dir))
    while True:
        try:
            rec.tick()
        except (subprocess.SubprocessError, OSError, RuntimeError, ValueError) as exc:
            print(f"reconciler: {exc}", file=sys.stderr, flush=True)
        time.sleep(INTERVAL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
