"""The local backend: nodes are network + mount + UTS (+ PID) namespaces on one Linux
machine, on a per-cluster bridge; the control plane is a supervised process on this
machine. Implements providers.base.Backend."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence

from cloudhpc.errors import NodeNotFound, ProvisionError
from cloudhpc.node import bootstrap
from cloudhpc.node.supervisor import RESTARTING_SUFFIX
from cloudhpc.paths import ClusterDir
from cloudhpc.plan import NodeSpec, Plan, Role
from cloudhpc.providers.base import NodeInfo, NodeState, ProviderError
from cloudhpc.providers.local import processes
from cloudhpc.providers.local.network import NETNS_DIR, Network, netns_name
from cloudhpc.runner import Runner

BOOT_TIMEOUT = 20.0
KEEP_PREVIOUS = 5  # old lives of a node whose logs are kept


class LocalBackend:
    def __init__(self, plan: Plan, cdir: ClusterDir, runner: Runner | None = None,
                 boot_timeout: float = BOOT_TIMEOUT) -> None:
        self.plan = plan
        self.cdir = cdir
        self.runner = runner or Runner()
        self.net = Network(self.runner)
        self.boot_timeout = boot_timeout
        self._errors: list[ProviderError] = []

    # -- network ------------------------------------------------------------------------
    def create_network(self) -> None:
        self.net.create_bridge(self.plan)

    def delete_network(self) -> None:
        self.net.delete_bridge(self.plan)

    # -- the control plane (this provider's API, which the head node calls) -------------
    def start_control_plane(self) -> None:
        run = self.cdir.control / "run"
        if processes.alive(processes.read_pid(run / "supervisor.pid") or -1):
            return
        for stale in ("ready", "supervisor.pid"):
            (run / stale).unlink(missing_ok=True)
        path = self.cdir.control / "spec.json"
        path.write_text(json.dumps(bootstrap.control_spec(self.cdir)))
        (self.cdir.control / "logs").mkdir(parents=True, exist_ok=True)
        processes.start_supervisor(self.runner, None, bootstrap.supervisor_argv(path),
                                   self.cdir.control / "logs" / "supervisor.log")

    def wait_control_plane(self, timeout: float = 15.0) -> None:
        run = self.cdir.control / "run"
        deadline = time.monotonic() + timeout
        while not (run / "ready").exists():
            if time.monotonic() > deadline:
                raise ProvisionError("start control plane", "it did not start in time",
                                     hint=f"see {self.cdir.control / 'logs'}")
            time.sleep(0.005)

    def stop_control_plane(self) -> None:
        processes.stop_pid(processes.read_pid(self.cdir.control / "run" / "supervisor.pid"))

    def control_plane_running(self) -> bool:
        pid = processes.read_pid(self.cdir.control / "run" / "control.pid")
        return pid is not None and processes.alive(pid)

    # -- nodes --------------------------------------------------------------------------
    def launch(self, nodes: Sequence[NodeSpec]) -> list[ProviderError]:
        """Create and boot nodes; idempotent by name (a running node is left alone). A node
        that does not boot in time is removed again and reported."""
        current = self.nodes()
        todo = [n for n in nodes if current[n.name].state is not NodeState.RUNNING]
        if not todo:
            return []
        # half-made (an interrupted launch) or dead nodes are removed first, then made anew
        self.terminate([n.name for n in todo if current[n.name].state is not NodeState.ABSENT])
        bootstrap.ensure_mount_points()
        # the head boots first: its database, slurmdbd and slurmctld are the longest way to
        # a ready cluster, and the other nodes' slurmd wait for slurmctld anyway
        first = [n for n in todo if n.role is Role.HEAD]
        for group in (first, [n for n in todo if n not in first]):
            self.net.attach(self.plan, group)
            for node in group:
                self._boot(node)
        errors = self._wait_ready(todo)
        if errors:
            self.terminate([n for e in errors for n in e.nodes])
        self._errors += errors
        return errors

    def _boot(self, node: NodeSpec) -> None:
        ndir = self.cdir.node(node.name)
        self._fresh(node)
        spec = bootstrap.write_node_spec(node, self.cdir)
        processes.start_supervisor(self.runner, netns_name(self.plan, node.name),
                                   bootstrap.supervisor_argv(spec),
                                   ndir / "logs" / "supervisor.log",
                                   pid_namespace=bootstrap.own_pids(node))

    def _fresh(self, node: NodeSpec) -> None:
        """A node made again is a new machine, as a new VM is: a new slurmd spool (the old
        one's job scripts made slurmd purge a relaunched job as 'vestigial'), /scratch, /tmp,
        munge and run directories. Its old logs are kept aside for diagnosis in
        logs/previous/NODE-TIME/ (the last KEEP_PREVIOUS of each node)."""
        ndir = self.cdir.node(node.name)
        if not ndir.exists():
            return
        spool = self.cdir.root / "slurm" / "spool" / node.name
        logs = [p for p in (ndir / "logs").glob("*") if p.is_file()]
        slurmd_log = self.cdir.logs / f"slurmd-{node.name}.log"
        if logs or slurmd_log.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S") + f".{time.time_ns() % 10**9:09d}"
            aside = self.cdir.logs / "previous" / f"{node.name}-{stamp}"
            aside.mkdir(parents=True, exist_ok=True)
            for path in logs:
                os.replace(path, aside / path.name)
            if slurmd_log.exists():
                os.replace(slurmd_log, aside / slurmd_log.name)
            kept = sorted((self.cdir.logs / "previous").glob(f"{node.name}-*"))
            for old in kept[:-KEEP_PREVIOUS]:
                shutil.rmtree(old, ignore_errors=True)
        for path in (spool, ndir / "scratch", ndir / "tmp", ndir / "munge", ndir / "run"):
            shutil.rmtree(path, ignore_errors=True)

    def _wait_ready(self, nodes: list[NodeSpec]) -> list[ProviderError]:
        deadline = time.monotonic() + self.boot_timeout
        waiting = {n.name for n in nodes}
        while waiting and time.monotonic() < deadline:
            waiting = {n for n in waiting if not (self.cdir.node(n) / "run" / "ready").exists()}
            time.sleep(0.005)
        errors = []
        for node in [n for n in nodes if n.name in waiting]:
            log = self.cdir.node(node.name) / "logs" / "supervisor.log"
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            errors.append(ProviderError(
                node.nodeset, [node.name],
                f"node {node.name} did not start in {self.boot_timeout:.0f} s"
                + (f": {tail[0]}" if tail else "") + f" (see {log})"))
        return errors

    def terminate(self, names: Sequence[str]) -> None:
        nodes = [n for n in self.plan.nodes if n.name in set(names)]
        processes.stop_namespaces([netns_name(self.plan, n.name) for n in nodes])
        self.net.detach(self.plan, nodes)
        for n in nodes:
            (self.cdir.node(n.name) / "run" / "ready").unlink(missing_ok=True)

    def rejoin(self, names: Sequence[str]) -> list[str]:
        """slurmd is killed; the node's supervisor starts it again within a second, and
        `slurmd -b` then reports a boot after the resume request. A slurmd that never
        registered holds no job. SIGKILL also ends a slurmd that hangs or is stopped."""
        return [name for name in names if self.kill(name, "slurmd")]

    def nodes(self) -> dict[str, NodeInfo]:
        return {n.name: self._info(n) for n in self.plan.nodes}

    def _info(self, node: NodeSpec) -> NodeInfo:
        ns = netns_name(self.plan, node.name)
        run = self.cdir.node(node.name) / "run"
        try:
            created: float | None = (NETNS_DIR / ns).stat().st_mtime
        except OSError:
            created = None

        def info(state: NodeState, detail: str = "") -> NodeInfo:
            return NodeInfo(node.name, node.role, node.nodeset, state, node.address, ns,
                            detail, created)

        if created is None:
            return info(NodeState.ABSENT)
        sup = processes.read_pid(run / "supervisor.pid")
        if sup is None:
            return info(NodeState.STARTING)
        if not processes.alive(sup):
            return info(NodeState.DOWN, "node supervisor is gone")
        for daemon in bootstrap.daemons(node, self.cdir):
            name = daemon["name"]
            pid = processes.read_pid(run / f"{name}.pid")
            if pid is not None and processes.alive(pid):
                continue
            if pid is not None and processes.restarting(pid, run / f"{name}{RESTARTING_SUFFIX}"):
                # the node's supervisor restarts a daemon that exited, within seconds: the
                # node heals itself (replacing it would end its jobs)
                return info(NodeState.STARTING, f"{name} is being restarted")
            return info(NodeState.DOWN, f"{name} is not running")
        return info(NodeState.RUNNING)

    def errors(self) -> list[ProviderError]:
        return list(self._errors)

    def on_failure(self, report: Callable[[ProviderError], None]) -> None:
        """A local node's launch ends inside launch(): nothing arrives later."""

    # -- entering nodes -----------------------------------------------------------------
    def enter(self, node: str, argv: Sequence[str]) -> list[str]:
        spec = self.plan.node(node)
        if spec is None:
            names = ", ".join(n.name for n in self.plan.nodes)
            raise NodeNotFound(f"no node '{node}' in cluster '{self.plan.cluster}'",
                               hint=f"nodes: {names}")
        pid = processes.read_pid(self.cdir.node(node) / "run" / "supervisor.pid")
        if pid is None or not processes.alive(pid):
            raise NodeNotFound(f"node '{node}' is not running",
                               hint="see `cloudhpc status`; `cloudhpc up` repairs it")
        own = ["-p"] if bootstrap.own_pids(spec) else []
        return ["nsenter", "-t", str(pid), "-n", "-m", "-u", *own, "--", *argv]

    def kill(self, node: str, daemon: str | None) -> list[int]:
        if daemon is None:
            pids = processes.pids_in_netns(netns_name(self.plan, node))
        else:
            run = self.cdir.control / "run" if node == "control-plane" else \
                self.cdir.node(node) / "run"
            pid = processes.read_pid(run / f"{daemon}.pid")
            pids = [pid] if pid is not None and processes.alive(pid) else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def sweep(self) -> list[str]:
        removed = []
        for pid in processes.pids_mentioning(str(self.cdir.root) + "/"):
            processes.stop_pid(pid, grace=2.0)
            removed.append(f"process {pid}")
        return removed

    def leftovers(self) -> list[str]:
        """Namespaces of this cluster that still exist (used by `down` to verify)."""
        return [netns_name(self.plan, n.name) for n in self.plan.nodes
                if (NETNS_DIR / netns_name(self.plan, n.name)).exists()]
