"""Bringing a cluster up and down, step by step, undoing everything if a step fails."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cloudhpc.errors import CloudHPCError, NotRootError, ProvisionError
from cloudhpc.node import bootstrap
from cloudhpc.paths import ClusterDir, home
from cloudhpc.plan import API_PORT, Plan
from cloudhpc.providers.base import Backend
from cloudhpc.runner import require_programs
from cloudhpc.slurm import accounting
from cloudhpc.slurm.client import SlurmClient
from cloudhpc.storage.account import PORT as BLOB_PORT

LISTEN_WAIT = 30.0  # seconds `up` waits for slurmctld to listen before it asks Slurm anyway

Progress = Callable[[str, int, int], None]
LOCAL_PROGRAMS = ["ip", "nsenter", "unshare", "setsid", "munged", "slurmctld", "slurmd",
                  "slurmdbd", "mariadbd",
                  "sbatch", "squeue", "sinfo", "scontrol", "scancel", "mpirun"]
STEPS = ["write configuration", "create network", "start control plane", "boot nodes",
         "wait for Slurm"]


def check_host() -> None:
    if os.geteuid() != 0:
        raise NotRootError()
    require_programs(LOCAL_PROGRAMS)


@contextmanager
def host_lock() -> Iterator[None]:
    """One `up`/`down` at a time on this machine (they share names, links, addresses)."""
    with open(home() / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _noop(step: str, done: int, total: int) -> None:
    pass


@contextmanager
def no_interrupts() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM wait until the block is done: removing a cluster half
    way leaves namespaces and processes nobody tracks. Outside the main thread, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {sig: signal.signal(sig, lambda n, _f: got.append(n))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if got:
            raise KeyboardInterrupt


def bring_up(plan: Plan, cdir: ClusterDir, backend: Backend, slurm: SlurmClient,
             progress: Progress = _noop, timeout: float = 60.0, cleanup: bool = True) -> None:
    """Run each step; on any failure (or Ctrl-C) remove everything (unless repairing a
    cluster that already ran: `cleanup=False`), then re-raise."""
    step = STEPS[0]
    try:
        for number, step in enumerate(STEPS):
            progress(step, number, len(STEPS))
            if number == 0:
                bootstrap.write_cluster_files(plan, cdir)
            elif number == 1:
                backend.create_network()
            elif number == 2:
                backend.start_control_plane()  # its Python starts while the nodes boot
            elif number == 3:
                errors = backend.launch(plan.static_nodes())
                if errors:
                    raise ProvisionError(step, errors[0].cause,
                                         hint="see the node's logs/ directory")
                backend.wait_control_plane()
            else:
                listening = bootstrap.ctld_listening(cdir) if plan.provider == "local" else None
                wait_idle(plan, slurm, timeout, listening)
                if plan.blob:
                    wait_port(plan.storage.address, BLOB_PORT, timeout, "the blob store")
                wait_port(plan.head.address, API_PORT, timeout, "the head's API")
        progress("ready", len(STEPS), len(STEPS))
    except BaseException as exc:
        kept = None
        if cleanup:
            with no_interrupts():  # a second Ctrl-C must not stop the rollback half way
                kept = keep_logs(plan, cdir)
                tear_down(plan, cdir, backend)
        where = f" (copied to {kept} before the rollback)" if kept else ""
        if isinstance(exc, ProvisionError):
            if where:
                raise ProvisionError(step, exc.cause, (exc.hint or "") + where) from exc
            raise
        if isinstance(exc, CloudHPCError):
            raise ProvisionError(step, exc.message, (exc.hint or "") + where) from exc
        if isinstance(exc, Exception):
            raise ProvisionError(step, f"{type(exc).__name__}: {exc}") from exc
        raise


def wait_idle(plan: Plan, slurm: SlurmClient, timeout: float,
              listening: Path | None = None) -> None:
    """Wait until Slurm reports every static compute node idle. A Slurm client that finds
    slurmctld not yet listening tries again only a second later: where LISTENING names the
    file that appears once it listens (bootstrap.ctld_listening), the first query waits
    for it (at most LISTEN_WAIT seconds; then it asks anyway)."""
    want = {n.name for n in plan.compute() if not n.dynamic}
    deadline = time.monotonic() + timeout
    if listening is not None:
        until = min(deadline, time.monotonic() + LISTEN_WAIT)
        while not listening.exists() and time.monotonic() < until:
            time.sleep(0.01)
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            states = {n.name: n.state for n in slurm.nodes()}
        except CloudHPCError:
            states = {}
        if want and all(states.get(n) == "idle" for n in want):
            return
        if not want and states is not None and slurm.ping():
            return
        time.sleep(0.02)
    bad = sorted(n for n in want if states.get(n) != "idle")
    shown = ", ".join(f"{n}={states.get(n, 'unknown')}" for n in bad[:5])
    raise ProvisionError("wait for Slurm", f"nodes not idle after {timeout:.0f} s: {shown}",
                         hint="see the slurmctld and slurmd logs under the cluster's logs/")


def wait_port(address: str, port: int, timeout: float, what: str) -> None:
    """Wait until a service of the cluster accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ProvisionError("wait for Slurm", f"{what} on {address}:{port} did not start in "
                         f"{timeout:.0f} s", hint="see the node's logs/ directory")


FAILED_KEEP = 5  # logs of the last failed `up`s kept per cluster name


def keep_logs(plan: Plan, cdir: ClusterDir) -> Path | None:
    """Before a failed `up` is rolled back: the cluster's and its nodes' logs, copied to
    failed/NAME-TIME/ beside the clusters (the last FAILED_KEEP per name), for diagnosis."""
    if not cdir.root.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = cdir.root.parent.parent / "failed" / f"{plan.cluster}-{stamp}"
    try:
        if cdir.logs.exists():
            shutil.copytree(cdir.logs, target / "logs", dirs_exist_ok=True)
        for node_logs in (cdir.root / "nodes").glob("*/logs"):
            shutil.copytree(node_logs, target / "nodes" / node_logs.parent.name,
                            dirs_exist_ok=True)
    except OSError:
        return None
    for old in sorted(target.parent.glob(f"{plan.cluster}-*"))[:-FAILED_KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target if target.exists() else None


def tear_down(plan: Plan, cdir: ClusterDir, backend: Backend) -> None:
    """Remove every node, link and file of the cluster; safe to run again and again.
    The head goes first (its reconciler must not relaunch what is being removed), then the
    control plane, then everything else."""
    backend.terminate([plan.head.name])
    backend.stop_control_plane()
    backend.terminate([n.name for n in plan.nodes])
    backend.delete_network()
    backend.sweep()
    left = backend.leftovers()
    if left:
        raise ProvisionError("down", f"still present: {', '.join(left)}",
                             hint="run `cloudhpc down` again")
    accounting.keep(plan, cdir)
    shutil.rmtree(cdir.root, ignore_errors=True)
