"""The local control plane: a small HTTP service on a Unix socket in the cluster's state
directory, through which the head node asks for nodes to be created or removed (Slurm's
power-save programs cannot enter the host's namespaces themselves; DESIGN.md). On Azure the
same requests go to Azure's API. Guarded by a per-cluster bearer token.

Uses the standard library's HTTP server: an internal, single-client endpoint that must idle
at zero CPU; the public REST API (FastAPI) is a different service."""

from __future__ import annotations

import base64
import hmac
import json
import os
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import hostlist

from cloudhpc.events import EventLog
from cloudhpc.paths import ClusterDir
from cloudhpc.plan import NodeSpec, Plan, make_plan
from cloudhpc.providers.base import NodeState
from cloudhpc.providers.local import LocalProvider
from cloudhpc.template import Template


class Controller:
    """What the service does, apart from HTTP: capacity checks, launch, terminate, events."""

    def __init__(self, plan: Plan, cdir: ClusterDir, capacity: dict[str, int],
                 provider: Any = None) -> None:
        self.plan = plan
        self.provider = provider or LocalProvider(plan, cdir)
        self.capacity = capacity
        self.events = EventLog(cdir.root / "events.jsonl")
        self.lock = threading.Lock()

    def _specs(self, names: list[str]) -> list[NodeSpec]:
        specs = [self.plan.node(n) for n in names]
        unknown = [n for n, s in zip(names, specs, strict=True) if s is None]
        if unknown:
            raise ValueError(f"unknown nodes: {', '.join(unknown)}")
        return [s for s in specs if s is not None]

    def launch(self, names: list[str]) -> dict[str, Any]:
        with self.lock:
            specs = self._specs(names)
            current = self.provider.nodes()
            allowed, failed = [], []
            for nodeset in dict.fromkeys(s.nodeset for s in specs):
                limit = self.capacity.get(nodeset)
                wanted = [s for s in specs if s.nodeset == nodeset]
                if limit is None:
                    allowed += wanted
                    continue
                have = sum(1 for i in current.values() if i.nodeset == nodeset
                           and i.state is not NodeState.ABSENT and i.name not in names)
                room = max(0, limit - have)
                allowed += wanted[:room]
                cause = (f"capacity: node set '{nodeset}' is limited to {limit} node(s) "
                         "(local.capacity in the template)")
                failed += [{"node": s.name, "nodeset": nodeset, "cause": cause}
                           for s in wanted[room:]]
            for f in failed:
                self.events.emit("node_failed", node=f["node"], nodeset=f["nodeset"],
                                 cause=f["cause"])
            if allowed:
                start = time.monotonic()
                try:
                    errors = self.provider.launch(allowed) or []
                except Exception as exc:  # noqa: BLE001 - reported as data, like a cloud API
                    self.provider.terminate([s.name for s in allowed])
                    failed += [{"node": s.name, "nodeset": s.nodeset, "cause": str(exc)}
                               for s in allowed]
                    allowed, errors = [], []
                # a cloud provider reports per-node failures (capacity, quota) as data
                refused = {n: e.cause for e in errors for n in e.nodes}
                for s in [s for s in allowed if s.name in refused]:
                    failed.append({"node": s.name, "nodeset": s.nodeset,
                                   "cause": refused[s.name]})
                    self.events.emit("node_failed", node=s.name, nodeset=s.nodeset,
                                     cause=refused[s.name])
                allowed = [s for s in allowed if s.name not in refused]
                for s in allowed:
                    self.events.emit("node_launched", node=s.name, nodeset=s.nodeset,
                                     seconds=round(time.monotonic() - start, 3))
            return {"launched": [s.name for s in allowed], "failed": failed}

    def terminate(self, names: list[str]) -> dict[str, Any]:
        with self.lock:
            specs = self._specs(names)
            self.provider.terminate([s.name for s in specs])
            for s in specs:
                self.events.emit("node_terminated", node=s.name, nodeset=s.nodeset)
            return {"terminated": [s.name for s in specs]}

    def nodes(self) -> dict[str, Any]:
        now = time.time()
        out = {}
        for name, i in self.provider.nodes().items():
            created = self.provider.created_at(name) if hasattr(self.provider,
                                                                 "created_at") else None
            out[name] = {"state": i.state.value, "nodeset": i.nodeset, "detail": i.detail,
                         "age": round(now - created, 3) if created else 0.0}
        return out


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    controller: Controller
    token: str


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def address_string(self) -> str:
        return "unix"

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if hmac.compare_digest(given.encode(), self.server.token.encode()):
            return True
        self._reply(401, {"error": "missing or wrong token"})
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path == "/health":
            self._reply(200, {"ok": True})
        elif self._authorized():
            if self.path == "/nodes":
                self._reply(200, self.server.controller.nodes())
            else:
                self._reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if not self._authorized():
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            names = hostlist.expand_hostlist(body.get("nodes", ""))
            ctl = self.server.controller
            if self.path == "/launch":
                self._reply(200, ctl.launch(names))
            elif self.path == "/terminate":
                self._reply(200, ctl.terminate(names))
            else:
                self._reply(404, {"error": f"no route {self.path}"})
        except (ValueError, hostlist.BadHostlist) as exc:
            self._reply(400, {"error": str(exc)})


def serve(cluster_dir: str) -> None:
    cdir = ClusterDir(Path(cluster_dir))
    template = Template.model_validate_json((cdir.etc / "template.json").read_text())
    plan = make_plan(template)
    sock = cdir.root / "control.sock"
    sock.unlink(missing_ok=True)
    server = _Server(str(sock), _Handler)
    os.chmod(sock, 0o600)
    token = (cdir.etc / "control.token").read_text().strip()
    provider = None
    if template.provider == "azure":  # on the head VM, with its managed identity
        from cloudhpc.azure.provider import AzureProvider

        if not (template.azure.subscription and template.azure.resource_group):
            raise SystemExit("control plane: the template names no Azure subscription and "
                             "resource group (cloudhpc up --provider azure sets them)")
        # the deployment's secrets, for the custom data of the VMs it creates
        secrets = {"mungeKey": base64.b64encode(cdir.munge_key.read_bytes()).decode(),
                   "clusterToken": token}
        provider = AzureProvider(template, plan, template.azure.subscription,
                                 template.azure.resource_group, secrets=secrets)
    server.controller = Controller(plan, cdir, template.local.capacity, provider)
    server.token = token
    print(f"control plane for {plan.cluster} listening on {sock}", flush=True)
    server.serve_forever(poll_interval=3600)


def request(cluster_dir: Path, method: str, path: str, body: dict[str, Any] | None = None,
            timeout: float = 120.0) -> dict[str, Any]:
    """A client call to the control plane (also used by the CLI and tests)."""
    from cloudhpc.autoscale.power import call

    return call(str(cluster_dir), method, path, body, timeout)


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    serve(sys.argv[1])
