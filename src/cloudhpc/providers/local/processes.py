"""Processes of a namespace node: start its supervisor, find and stop everything inside."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from cloudhpc.runner import Runner


def pids_in_netns(ns: str) -> list[int]:
    """Every process whose network namespace is /run/netns/NS (like `ip netns pids`)."""
    try:
        target = os.stat(f"/run/netns/{ns}")
    except FileNotFoundError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            out.append(int(entry))
    return out


def _state(pid: int) -> str | None:
    """PID's state letter from /proc (R, S, Z, ...), None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")


def restarting(pid: int, note: Path) -> bool:
    """A node supervisor's daemon PID that is not alive is being restarted: its end not yet
    collected by the supervisor (a zombie), or its note (supervisor.Daemon.exiting) that
    holds until a time not yet past."""
    if _state(pid) == "Z":
        return True
    try:
        return time.time() < float(note.read_text())
    except (OSError, ValueError):
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def start_supervisor(runner: Runner, ns: str | None, argv: list[str], log: Path,
                     pid_namespace: bool = False) -> None:
    """Start a supervisor detached (setsid -f), so no caller has to reap it; it writes its
    own pid file when ready. With a namespace, inside that node's namespaces (and with
    PID_NAMESPACE a PID namespace of its own, the supervisor its init)."""
    pid = ["--pid", "--fork"] if pid_namespace else []
    node = ["nsenter", f"--net=/run/netns/{ns}", "--", "unshare", "--mount", "--uts", *pid,
            "--propagation", "private", "--"] if ns else []
    cmd = ["setsid", "-f", *node, *argv]
    runner.spawn(cmd, log)


def stop_namespaces(namespaces: list[str], grace: float = 3.0) -> None:
    """SIGTERM every process in the namespaces, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [p for ns in namespaces for p in pids_in_netns(ns)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 2.0)
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if alive(p)]
            time.sleep(0.02)
        if not pids:
            return


def stop_pid(pid: int | None, grace: float = 5.0) -> None:
    if pid is None or not alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # gone meanwhile (e.g. with its namespace's init)
        return
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line holds TEXT (a cluster's state directory): what a
    cluster left running when its pid files were never written."""
    out = []
    needle = text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if needle in fh.read():
                    out.append(int(entry))
        except OSError:
            continue
    return out
