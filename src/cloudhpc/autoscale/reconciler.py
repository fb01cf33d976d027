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
from cloudhpc.autoscale.power import PATH, call
from cloudhpc.events import EventLog
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
        self.jobs: set[int] | None = None

    def tick(self) -> list[Action]:
        now = time.time()
        slurm = slurm_nodes(now)
        provider = {name: ProviderNode(name, info["state"], info.get("detail", ""))
                    for name, info in call(str(self.dir), "GET", "/nodes").items()}
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
        jobs = running_jobs()
        if self.jobs is not None:
            for job in sorted(jobs - self.jobs):
                self.events.emit("job_started", job=job)
            for job in sorted(self.jobs - jobs):
                self.events.emit("job_ended", job=job)
        self.jobs = jobs

    def act(self, action: Action) -> None:
        node = action.node
        if action.act is Act.REPLACE:
            scontrol_update(node, "state=down", f"reason={LOST_PREFIX}: {action.why[:80]}")
            call(str(self.dir), "POST", "/terminate", {"nodes": node})
            result = call(str(self.dir), "POST", "/launch", {"nodes": node})
            if node in result.get("launched", []):
                scontrol_update(node, "state=resume")
                self.events.emit("node_replaced", node=node, cause=action.why)
        elif action.act is Act.FAIL_DYNAMIC:
            scontrol_update(node, "state=down", f"reason={LOST_PREFIX}: {action.why[:80]}")
            scontrol_update(node, "state=power_down_force")
            self.events.emit("node_failed", node=node, cause=action.why)
        elif action.act is Act.REMOVE_ORPHAN:
            call(str(self.dir), "POST", "/terminate", {"nodes": node})
            self.events.emit("orphan_removed", node=node, cause=action.why)
        elif action.act is Act.RETRY:
            scontrol_update(node, "state=power_down_force")
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
