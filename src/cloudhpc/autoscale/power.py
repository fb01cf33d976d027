"""Slurm power-save entry points: ResumeProgram, SuspendProgram and ResumeFailProgram.

Slurm runs them inside slurmctld's context on the head node, with a bare environment. They
ask the control plane (a Unix socket in the cluster's state directory) to create or remove
nodes and tell Slurm about nodes that could not be created. They run once per power event
and must start fast: the modules they import use the standard library (and python-hostlist).

    python -m cloudhpc.autoscale.power CLUSTER_DIR resume|suspend|resume_fail HOSTLIST
"""

from __future__ import annotations

import os
import sys

import hostlist

from cloudhpc.autoscale.protocol import ControlClient
from cloudhpc.events import EventKind, EventLog
from cloudhpc.slurm.client import SlurmClient, on_this_node


def resume(control: ControlClient, slurm: SlurmClient, nodes: str, events: EventLog) -> int:
    events.emit(EventKind.NODE_REQUESTED, nodes=nodes)
    result = control.launch(nodes)
    for failure in result["failed"]:
        # Slurm must not wait ResumeTimeout for a node that will never come; the node set
        # backs off (the reconciler makes the node eligible again after a cooldown) and
        # jobs may run elsewhere meanwhile.
        slurm.take_out(failure["node"], failure["cause"])
    return 0


def suspend(control: ControlClient, slurm: SlurmClient, nodes: str, events: EventLog) -> int:
    events.emit(EventKind.NODE_SUSPENDING, nodes=nodes)
    control.terminate(nodes)
    return 0


def resume_fail(control: ControlClient, slurm: SlurmClient, nodes: str,
                events: EventLog) -> int:
    cause = "resume failed: did not join Slurm within ResumeTimeout"
    events.emit(EventKind.NODE_FAILED, nodes=nodes, cause=cause)
    control.terminate(nodes)
    for node in hostlist.expand_hostlist(nodes):
        slurm.update_node(node, "state=down", f"reason={cause}")
    return 0


ACTIONS = {"resume": resume, "suspend": suspend, "resume_fail": resume_fail}


def main(argv: list[str]) -> int:
    cluster_dir, action, nodes = argv
    events = EventLog(os.path.join(cluster_dir, "events.jsonl"))
    try:
        return ACTIONS[action](ControlClient(cluster_dir), SlurmClient(on_this_node()), nodes,
                               events)
    except Exception as exc:  # noqa: BLE001 - Slurm only sees the exit code; log the cause
        events.emit(EventKind.POWER_ERROR, action=action, nodes=nodes, cause=str(exc))
        sys.stderr.write(f"cloudhpc power {action} {nodes}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
