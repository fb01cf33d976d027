"""Live changes to a running cluster: `cloudhpc scale NODESET --min M --max N`.

Slurm 22.05 reads its node list only at start, so the new slurm.conf is followed by a
clean slurmctld restart (`scontrol shutdown`, which saves every job first; the supervisor
starts it again) and `scontrol reconfigure` for the slurmds. Running and queued jobs are
kept; node addresses do not move (each node set owns a fixed slice of the network)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from cloudhpc.errors import CloudHPCError, JobError, NodeNotFound
from cloudhpc.events import EventKind, EventLog
from cloudhpc.node import bootstrap
from cloudhpc.paths import ClusterDir
from cloudhpc.plan import Plan, make_plan
from cloudhpc.providers.base import Backend
from cloudhpc.slurm.client import SlurmClient
from cloudhpc.state import ClusterRecord, Store
from cloudhpc.template import Template, load

BUSY = ("allocated", "mixed", "completing")


def scale(record: ClusterRecord, store: Store, plan: Plan, cdir: ClusterDir,
          backend: Callable[[Template, Plan], Backend], slurm: SlurmClient, events: EventLog,
          nodeset: str, min_nodes: int | None, max_nodes: int | None) -> dict[str, Any]:
    """BACKEND gives the provider backend of a plan (the old one removes nodes, the new one
    makes them)."""
    data = copy.deepcopy(record.template)
    index = next((i for i, ns in enumerate(data["compute"]) if ns["name"] == nodeset), None)
    if index is None:
        names = ", ".join(ns["name"] for ns in data["compute"])
        raise NodeNotFound(f"no node set '{nodeset}' in cluster '{record.name}'",
                           hint=f"node sets: {names}")
    entry = data["compute"][index]
    old = (entry["min"], entry["max"])
    entry["min"] = entry["min"] if min_nodes is None else min_nodes
    entry["max"] = entry["max"] if max_nodes is None else max_nodes
    others = [(r.name, r.cidr) for r in store.clusters() if r.name != record.name]
    template, _ = load(data, running=others)  # same validation as `up`, with field paths
    new_plan = make_plan(template)
    removed = [n.name for n in plan.compute()
               if n.nodeset == nodeset and new_plan.node(n.name) is None]
    _refuse_busy(slurm, removed)

    # the one copy of the template, then what is made from it
    store.put_cluster(record.name, template.provider, "running",
                      template.model_dump(mode="json"), template.network.cidr)
    bootstrap.write_cluster_files(new_plan, cdir)
    _restart_slurmctld(cdir, slurm)
    backend(template, plan).terminate(removed)
    new_backend = backend(template, new_plan)
    errors = new_backend.launch([n for n in new_plan.static_nodes() if n.nodeset == nodeset])
    slurm.reconfigure()
    # the reconciler and the control plane read the template at start: their supervisors
    # start them again with the new one
    new_backend.kill("head", "reconciler")
    new_backend.kill("control-plane", "control")
    events.emit(EventKind.NODESET_SCALED, nodeset=nodeset, old_min=old[0], old_max=old[1],
                min=entry["min"], max=entry["max"], removed=removed)
    if errors:
        raise CloudHPCError(f"node set '{nodeset}' scaled, but {errors[0].cause}",
                            hint="`cloudhpc up` with the same template repairs it")
    return {"nodeset": nodeset, "min": entry["min"], "max": entry["max"], "removed": removed}


def _refuse_busy(slurm: SlurmClient, removed: list[str]) -> None:
    if not removed:
        return
    try:
        busy = [n.name for n in slurm.nodes() if n.name in removed and n.state in BUSY]
    except CloudHPCError:
        busy = []
    if busy:
        raise JobError(f"nodes {', '.join(busy)} would be removed but are running jobs",
                       hint="wait for those jobs or cancel them, then scale down")


def _restart_slurmctld(cdir: ClusterDir, slurm: SlurmClient) -> None:
    pidfile = cdir.node("head") / "run" / "slurmctld.pid"

    def pid() -> str:
        try:
            return pidfile.read_text().strip()
        except OSError:
            return ""

    old = pid()
    slurm.shutdown_controller()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pid() not in (old, "") and slurm.ping():
            return
        time.sleep(0.1)
    raise CloudHPCError("slurmctld did not come back after the change",
                        hint="see the slurmctld log under the cluster's logs/")
