"""Slurm power-save entry points: ResumeProgram, SuspendProgram and ResumeFailProgram.

Slurm runs them inside slurmctld's context on the head node, with a bare environment. They
ask the control plane (a Unix socket in the cluster's state directory) to create or remove
nodes and tell Slurm about nodes that could not be created. Standard library only: they run
once per power event and must start fast.

    python -m cloudhpc.autoscale.power CLUSTER_DIR resume|suspend|resume_fail HOSTLIST
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from cloudhpc.events import EventLog

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def call(cluster_dir: str, method: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 120.0, retry_for: float = 30.0) -> dict[str, Any]:
    """One request; retries while the service is down (it is supervised and comes back)."""
    with open(os.path.join(cluster_dir, "etc", "control.token")) as fh:
        token = fh.read().strip()
    payload = json.dumps(body or {}).encode()
    deadline = time.monotonic() + retry_for
    delay = 0.05
    while True:
        conn = _UnixConnection(os.path.join(cluster_dir, "control.sock"), timeout)
        try:
            conn.request(method, path, body=payload if method == "POST" else None,
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/json"})
            resp = conn.getresponse()
            data: dict[str, Any] = json.loads(resp.read() or b"{}")
            if resp.status >= 400:
                raise RuntimeError(f"control plane answered {resp.status}: {data.get('error')}")
            return data
        except (TimeoutError, ConnectionError, FileNotFoundError, http.client.RemoteDisconnected):
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        finally:
            conn.close()


def scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], env={"PATH": PATH}, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def jobs_on(node: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "CF,R,CG", "-w", node, "-o", "%i"],
                         env={"PATH": PATH}, capture_output=True, text=True, check=False)
    return out.stdout.split()


def take_out(node: str, reason: str) -> None:
    """Take a node that cannot serve out of Slurm: down (its jobs are requeued), powered
    down (our SuspendProgram removes what is left), and its jobs released at once rather
    than after Slurm's requeue delay, so that they may run on other nodes now."""
    jobs = jobs_on(node)
    scontrol("update", f"nodename={node}", "state=down", f"reason={reason[:120]}")
    scontrol("update", f"nodename={node}", "state=power_down_force")
    for job in jobs:
        scontrol("update", f"jobid={job}", "starttime=now")


def resume(cluster_dir: str, nodes: str, events: EventLog) -> int:
    events.emit("node_requested", nodes=nodes)
    result = call(cluster_dir, "POST", "/launch", {"nodes": nodes})
    for failure in result.get("failed", []):
        # Slurm must not wait ResumeTimeout for a node that will never come; the node set
        # backs off (the reconciler makes the node eligible again after a cooldown) and
        # jobs may run elsewhere meanwhile.
        take_out(failure["node"], failure["cause"])
    return 0


def suspend(cluster_dir: str, nodes: str, events: EventLog) -> int:
    events.emit("node_suspending", nodes=nodes)
    call(cluster_dir, "POST", "/terminate", {"nodes": nodes})
    return 0


def resume_fail(cluster_dir: str, nodes: str, events: EventLog) -> int:
    cause = "resume failed: did not join Slurm within ResumeTimeout"
    events.emit("node_failed", nodes=nodes, cause=cause)
    call(cluster_dir, "POST", "/terminate", {"nodes": nodes})
    for node in expand(nodes):
        scontrol("update", f"nodename={node}", "state=down", f"reason={cause}")
    return 0


def expand(nodes: str) -> list[str]:
    out = subprocess.run(["scontrol", "show", "hostnames", nodes], env={"PATH": PATH},
                         capture_output=True, text=True, check=False)
    return out.stdout.split()


ACTIONS = {"resume": resume, "suspend": suspend, "resume_fail": resume_fail}


def main(argv: list[str]) -> int:
    cluster_dir, action, nodes = argv
    events = EventLog(os.path.join(cluster_dir, "events.jsonl"))
    try:
        return ACTIONS[action](cluster_dir, nodes, events)
    except Exception as exc:  # noqa: BLE001 - Slurm only sees the exit code; log the cause
        events.emit("power_error", action=action, nodes=nodes, cause=str(exc))
        print(f"cloudhpc power {action} {nodes}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
