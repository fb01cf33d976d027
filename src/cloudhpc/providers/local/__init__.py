"""The local provider: nodes are network + mount + UTS namespaces on one Linux machine."""

from __future__ import annotations

import json
import time

from cloudhpc.errors import ProvisionError
from cloudhpc.node import bootstrap
from cloudhpc.paths import ClusterDir
from cloudhpc.plan import NodeSpec, Plan
from cloudhpc.providers.base import NodeInfo, NodeState, ProviderError
from cloudhpc.providers.local import processes
from cloudhpc.providers.local.network import NETNS_DIR, Network, netns_name
from cloudhpc.runner import Runner


class LocalProvider:
    def __init__(self, plan: Plan, cdir: ClusterDir, runner: Runner | None = None) -> None:
        self.plan = plan
        self.cdir = cdir
        self.runner = runner or Runner()
        self.net = Network(self.runner)
        self._errors: list[ProviderError] = []

    # -- network ------------------------------------------------------------------------
    def create_network(self, plan: Plan) -> None:
        self.net.create_bridge(plan)

    def delete_network(self, plan: Plan) -> None:
        self.net.delete_bridge(plan)

    # -- the control plane (this provider's API, which the head node calls) -------------
    def start_api(self, timeout: float = 15.0) -> None:
        run = self.cdir.control / "run"
        if processes.alive(processes.read_pid(run / "supervisor.pid") or -1):
            return
        for stale in ("ready", "supervisor.pid"):
            (run / stale).unlink(missing_ok=True)
        path = self.cdir.control / "spec.json"
        path.write_text(json.dumps(bootstrap.control_spec(self.cdir)))
        (self.cdir.control / "logs").mkdir(parents=True, exist_ok=True)
        processes.start_supervisor(None, bootstrap.supervisor_argv(path),
                                   self.cdir.control / "logs" / "supervisor.log")
        deadline = time.monotonic() + timeout
        while not (run / "ready").exists():
            if time.monotonic() > deadline:
                raise ProvisionError("start control plane", "it did not start in time",
                                     hint=f"see {self.cdir.control / 'logs'}")
            time.sleep(0.005)

    def stop_api(self) -> None:
        processes.stop_pid(processes.read_pid(self.cdir.control / "run" / "supervisor.pid"))

    def api_running(self) -> bool:
        pid = processes.read_pid(self.cdir.control / "run" / "control.pid")
        return pid is not None and processes.alive(pid)

    # -- nodes --------------------------------------------------------------------------
    def launch(self, nodes: list[NodeSpec], timeout: float = 20.0) -> None:
        """Create and boot nodes; idempotent by name (a running node is left alone)."""
        current = self.nodes()
        todo = [n for n in nodes if current[n.name].state is not NodeState.RUNNING]
        if not todo:
            return
        # half-made (an interrupted launch) or dead nodes are removed first, then made anew
        self.terminate([n.name for n in todo if current[n.name].state is not NodeState.ABSENT])
        bootstrap.ensure_mount_points()
        self.net.attach(self.plan, todo)
        for node in todo:
            ndir = self.cdir.node(node.name)
            for stale in ("ready", "supervisor.pid"):
                (ndir / "run" / stale).unlink(missing_ok=True)
            spec = bootstrap.write_node_spec(node, self.cdir)
            processes.start_supervisor(netns_name(self.plan, node.name),
                                       bootstrap.supervisor_argv(spec),
                                       ndir / "logs" / "supervisor.log",
                                       pid_namespace=bootstrap.own_pids(node))
        self._wait_ready(todo, timeout)

    def _wait_ready(self, nodes: list[NodeSpec], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = {n.name for n in nodes}
        while waiting and time.monotonic() < deadline:
            waiting = {n for n in waiting if not (self.cdir.node(n) / "run" / "ready").exists()}
            time.sleep(0.005)
        if waiting:
            name = sorted(waiting)[0]
            log = self.cdir.node(name) / "logs" / "supervisor.log"
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            raise ProvisionError("boot nodes", f"node {name} did not start in {timeout:.0f} s"
                                 + (f": {tail[0]}" if tail else ""),
                                 hint=f"see {log}")

    def terminate(self, names: list[str]) -> None:
        nodes = [n for n in self.plan.nodes if n.name in set(names)]
        processes.stop_namespaces([netns_name(self.plan, n.name) for n in nodes])
        self.net.detach(self.plan, nodes)
        for n in nodes:
            (self.cdir.node(n.name) / "run" / "ready").unlink(missing_ok=True)

    def nodes(self) -> dict[str, NodeInfo]:
        return {n.name: self._info(n) for n in self.plan.nodes}

    def _info(self, node: NodeSpec) -> NodeInfo:
        ns = netns_name(self.plan, node.name)
        run = self.cdir.node(node.name) / "run"

        def info(state: NodeState, detail: str = "") -> NodeInfo:
            return NodeInfo(node.name, node.role, node.nodeset, state, node.address, ns, detail)

        if not (NETNS_DIR / ns).exists():
            return info(NodeState.ABSENT)
        sup = processes.read_pid(run / "supervisor.pid")
        if sup is None:
            return info(NodeState.STARTING)
        if not processes.alive(sup):
            return info(NodeState.DOWN, "node supervisor is gone")
        for daemon in bootstrap.daemons(node, self.cdir):
            pid = processes.read_pid(run / f"{daemon['name']}.pid")
            if pid is None or not processes.alive(pid):
                return info(NodeState.DOWN, f"{daemon['name']} is not running")
        return info(NodeState.RUNNING)

    def created_at(self, name: str) -> float | None:
        """When the node's namespace was made (None if it does not exist)."""
        try:
            return (NETNS_DIR / netns_name(self.plan, name)).stat().st_mtime
        except OSError:
            return None

    def supervisor_pid(self, name: str) -> int | None:
        pid = processes.read_pid(self.cdir.node(name) / "run" / "supervisor.pid")
        return pid if pid is not None and processes.alive(pid) else None

    def errors(self) -> list[ProviderError]:
        return list(self._errors)

    def leftovers(self) -> list[str]:
        """Namespaces of this cluster that still exist (used by `down` to verify)."""
        return [netns_name(self.plan, n.name) for n in self.plan.nodes
                if (NETNS_DIR / netns_name(self.plan, n.name)).exists()]
