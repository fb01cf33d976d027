"""The control plane's requests and replies, typed, and its client. The head node's
power-save programs and reconciler call it; the service is cloudhpc.autoscale.control.
Standard library only: the power-save programs must start fast."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from typing import Any, TypedDict


class Failure(TypedDict):
    node: str
    nodeset: str
    cause: str


class LaunchReply(TypedDict):
    launched: list[str]
    failed: list[Failure]


class TerminateReply(TypedDict):
    terminated: list[str]


class RejoinReply(TypedDict):
    rejoined: list[str]  # the nodes whose slurmd the provider made register again


class NodeReply(TypedDict):
    state: str      # providers.base.NodeState values
    nodeset: str
    detail: str
    age: float      # seconds since the provider made the node (0 if unknown)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class ControlError(RuntimeError):
    """The control plane answered with an error."""


class ControlClient:
    """Requests to the control plane of the cluster whose state directory is CLUSTER_DIR;
    retried while the service is down (it is supervised and comes back)."""

    def __init__(self, cluster_dir: str, timeout: float = 120.0,
                 retry_for: float = 30.0) -> None:
        self.dir = cluster_dir
        self.timeout = timeout
        self.retry_for = retry_for

    def launch(self, nodes: str) -> LaunchReply:
        reply: LaunchReply = self._call("POST", "/launch", {"nodes": nodes})
        return reply

    def terminate(self, nodes: str) -> TerminateReply:
        reply: TerminateReply = self._call("POST", "/terminate", {"nodes": nodes})
        return reply

    def rejoin(self, nodes: str) -> RejoinReply:
        reply: RejoinReply = self._call("POST", "/rejoin", {"nodes": nodes})
        return reply

    def nodes(self) -> dict[str, NodeReply]:
        reply: dict[str, NodeReply] = self._call("GET", "/nodes")
        return reply

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        with open(os.path.join(self.dir, "etc", "control.token")) as fh:
            token = fh.read().strip()
        payload = json.dumps(body or {}).encode()
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        while True:
            conn = _UnixConnection(os.path.join(self.dir, "control.sock"), self.timeout)
            try:
                conn.request(method, path, body=payload if method == "POST" else None,
                             headers={"Authorization": f"Bearer {token}",
                                      "Content-Type": "application/json"})
                resp = conn.getresponse()
                data = json.loads(resp.read() or b"{}")
                if resp.status >= 400:
                    raise ControlError(f"control plane answered {resp.status}: "
                                       f"{data.get('error')}")
                return data
            except (TimeoutError, ConnectionError, FileNotFoundError,
                    http.client.RemoteDisconnected):
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                conn.close()
