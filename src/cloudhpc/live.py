"""Live changes to a running cluster: `cloudhpc scale NODESET --min M --max N`.

Slurm 22.05 reads its node list only at start, so the new slurm.conf is followed by a
clean slurmctld restart (`scontrol shutdown`, which saves every job first; the supervisor
starts it again) and `scontrol reconfigure` for the slurmds. Running and queued jobs are
kept; node addresses do not move (each node set owns a fixed slice of the network)."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

from cloudhpc.errors import CloudHPCError, JobError, NodeNotFound
from cloudhpc.node import bootstrap
from cloudhpc.plan import make_plan
from cloudhpc.providers.local import LocalProvider, processes
from cloudhpc.template import load

if TYPE_CHECKING:
    from cloudhpc.cluster import Cluster

BUSY = ("allocated", "mixed", "completing")


def scale(cluster: Cluster, nodeset: str, min_nodes: int | None,
          max_nodes: int | None) -> dict[str, Any]:
    data = copy.deepcopy(cluster.record.template)
    index = next((i for i, ns in enumerate(data["compute"]) if ns["name"] == nodeset), None)
    if index is None:
        names = ", ".join(ns["name"] for ns in data["compute"])
        raise NodeNotFound(f"no node set '{nodeset}' in cluster '{cluster.name}'",
                           hint=f"node sets: {names}")
    entry = data["compute"][index]
    old = (entry["min"], entry["max"])
    entry["min"] = entry["min"] if min_nodes is None else min_nodes
    entry["max"] = entry["max"] if max_nodes is None else max_nodes
    others = [(r.name, r.cidr) for r in cluster.store.clusters() if r.name != cluster.name]
    template, _ = load(data, running=others)  # same validation as `up`, with field paths
    plan = make_plan(template)
    removed = [n.name for n in cluster.plan.compute()
               if n.nodeset == nodeset and plan.node(n.name) is None]
    _refuse_busy(cluster, removed)

    bootstrap.write_cluster_files(plan, cluster.dir, template.model_dump_json())
    provider = LocalProvider(plan, cluster.dir, cluster.runner)
    _restart_slurmctld(cluster)
    cluster.provider.terminate(removed)
    new_static = [n for n in plan.static_nodes() if n.nodeset == nodeset]
    provider.launch(new_static)
    cluster.exec_head(["scontrol", "reconfigure"])
    for daemon in ("reconciler",):  # it reads the template at start
        pid = processes.read_pid(cluster.dir.node("head") / "run" / f"{daemon}.pid")
        processes.stop_pid(pid, grace=2)
    processes.stop_pid(processes.read_pid(cluster.dir.control / "run" / "control.pid"),
                       grace=2)
    cluster.store.put_cluster(cluster.name, template.provider, "running",
                              template.model_dump(mode="json"), template.network.cidr)
    cluster.events.emit("nodeset_scaled", nodeset=nodeset, old_min=old[0], old_max=old[1],
                        min=entry["min"], max=entry["max"], removed=removed)
    return {"nodeset": nodeset, "min": entry["min"], "max": entry["max"], "removed": removed}


def _refuse_busy(cluster: Cluster, removed: list[str]) -> None:
    if not removed:
        return
    try:
        busy = [n["name"] for n in cluster.slurm.nodes()
                if n["name"] in removed and n.get("state") in BUSY]
    except CloudHPCError:
        busy = []
    if busy:
        raise JobError(f"nodes {', '.join(busy)} would be removed but are running jobs",
                       hint="wait for those jobs or cancel them, then scale down")


def _restart_slurmctld(cluster: Cluster) -> None:
    pidfile = cluster.dir.node("head") / "run" / "slurmctld.pid"
    old = processes.read_pid(pidfile)
    cluster.exec_head(["scontrol", "shutdown", "slurmctld"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = processes.read_pid(pidfile)
        if new != old and cluster.slurm.ping():
            return
        time.sleep(0.1)
    raise CloudHPCError("slurmctld did not come back after the change",
                        hint="see the slurmctld log under the cluster's logs/")
