"""The local control plane: a small HTTP service on a Unix socket in the cluster's state
directory, through which the head node asks for nodes to be created or removed (Slurm's
power-save programs cannot enter the host's namespaces themselves). On Azure the
same requests go to Azure's API. Guarded by a per-cluster bearer token.

Uses the standard library's HTTP server: an internal, single-client endpoint that must idle
at zero CPU; the public REST API (FastAPI) is a different service."""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import socketserver
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import hostlist

from cloudhpc.autoscale.decide import failure_reason
from cloudhpc.autoscale.protocol import Failure, LaunchReply, NodeReply, RejoinReply, TerminateReply
from cloudhpc.errors import CloudHPCError
from cloudhpc.events import EventKind, EventLog
from cloudhpc.paths import ClusterDir
from cloudhpc.plan import NodeSpec, Plan, make_plan
from cloudhpc.providers import provider_for
from cloudhpc.providers.base import NodeState, Provider, ProviderError
from cloudhpc.template import Template

log = logging.getLogger("cloudhpc.control")


class Controller:
    """What the service does, apart from HTTP: capacity checks, launch, terminate, events.
    Typed against the provider interface; serve() picks the implementation."""

    def __init__(self, plan: Plan, provider: Provider, capacity: dict[str, int],
                 events: EventLog, clock: Any = time,
                 take_out: Callable[[str, str], None] | None = None) -> None:
        """TAKE_OUT(node, cause): tell Slurm a node will not come (late failures)."""
        self.plan = plan
        self.provider = provider
        self.capacity = capacity
        self.events = events
        self.clock = clock
        self.take_out = take_out
        self.lock = threading.Lock()
        provider.on_failure(self._late_failure)

    def _late_failure(self, error: ProviderError) -> None:
        """A node the provider accepted to make and then could not (Azure: minutes later):
        Slurm must not wait ResumeTimeout for it."""
        for node in error.nodes:
            self.events.emit(EventKind.NODE_FAILED, node=node, nodeset=error.nodeset,
                             cause=error.cause)
            if self.take_out is not None:
                try:
                    self.take_out(node, failure_reason(error.cause))
                except Exception:  # noqa: BLE001 - the reconciler sees the node later
                    log.exception("could not take %s out of Slurm", node)

    def _specs(self, names: Sequence[str]) -> list[NodeSpec]:
        specs = [self.plan.node(n) for n in names]
        unknown = [n for n, s in zip(names, specs, strict=True) if s is None]
        if unknown:
            raise ValueError(f"unknown nodes: {', '.join(unknown)}")
        return [s for s in specs if s is not None]

    def _within_capacity(self, specs: list[NodeSpec],
                         names: Sequence[str]) -> tuple[list[NodeSpec], list[Failure]]:
        current = self.provider.nodes()
        allowed: list[NodeSpec] = []
        failed: list[Failure] = []
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
            failed += [Failure(node=s.name, nodeset=nodeset, cause=cause)
                       for s in wanted[room:]]
        return allowed, failed

    def launch(self, names: Sequence[str]) -> LaunchReply:
        with self.lock:
            specs = self._specs(names)
            allowed, failed = self._within_capacity(specs, names)
            for f in failed:
                self.events.emit(EventKind.NODE_FAILED, **f)
            if not allowed:
                return LaunchReply(launched=[], failed=failed)
            start = self.clock.monotonic()
            try:
                errors = self.provider.launch(allowed)
            except Exception as exc:  # noqa: BLE001 - reported as data, like a cloud API
                log.exception("launch of %s failed", [s.name for s in allowed])
                self.provider.terminate([s.name for s in allowed])
                errors = []
                for s in allowed:
                    failed.append(Failure(node=s.name, nodeset=s.nodeset,
                                          cause=failure_reason(str(exc))))
                    self.events.emit(EventKind.NODE_FAILED, node=s.name, nodeset=s.nodeset,
                                     cause=str(exc))
                return LaunchReply(launched=[], failed=failed)
            # a provider reports per-node failures (capacity, quota, boot) as data
            refused = {n: e.cause for e in errors for n in e.nodes}
            for s in [s for s in allowed if s.name in refused]:
                failed.append(Failure(node=s.name, nodeset=s.nodeset,
                                      cause=failure_reason(refused[s.name])))
                self.events.emit(EventKind.NODE_FAILED, node=s.name, nodeset=s.nodeset,
                                 cause=refused[s.name])
            launched = [s for s in allowed if s.name not in refused]
            for s in launched:
                self.events.emit(EventKind.NODE_LAUNCHED, node=s.name, nodeset=s.nodeset,
                                 seconds=round(self.clock.monotonic() - start, 3))
            return LaunchReply(launched=[s.name for s in launched], failed=failed)

    def terminate(self, names: Sequence[str]) -> TerminateReply:
        with self.lock:
            specs = self._specs(names)
            self.provider.terminate([s.name for s in specs])
            for s in specs:
                self.events.emit(EventKind.NODE_TERMINATED, node=s.name, nodeset=s.nodeset)
            return TerminateReply(terminated=[s.name for s in specs])

    def rejoin(self, names: Sequence[str]) -> RejoinReply:
        with self.lock:
            specs = self._specs(names)
            return RejoinReply(rejoined=self.provider.rejoin([s.name for s in specs]))

    def nodes(self) -> dict[str, NodeReply]:
        now = self.clock.time()
        return {name: NodeReply(state=i.state.value, nodeset=i.nodeset, detail=i.detail,
                                age=round(now - i.created_at, 3) if i.created_at else 0.0)
                for name, i in self.provider.nodes().items()}


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
                self._reply(200, dict(self.server.controller.nodes()))
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
                self._reply(200, dict(ctl.launch(names)))
            elif self.path == "/terminate":
                self._reply(200, dict(ctl.terminate(names)))
            elif self.path == "/rejoin":
                self._reply(200, dict(ctl.rejoin(names)))
            else:
                self._reply(404, {"error": f"no route {self.path}"})
        except (ValueError, hostlist.BadHostlist) as exc:
            self._reply(400, {"error": str(exc)})


def serve(cluster_dir: str) -> None:
    cdir = ClusterDir(Path(cluster_dir))
    template = Template.model_validate_json(cdir.template.read_text())
    plan = make_plan(template)
    try:
        provider = provider_for(template, plan, cdir)
    except CloudHPCError as exc:
        raise SystemExit(f"control plane: {exc.message} ({exc.hint})") from None
    sock = cdir.root / "control.sock"
    sock.unlink(missing_ok=True)
    server = _Server(str(sock), _Handler)
    os.chmod(sock, stat.S_IRUSR | stat.S_IWUSR)  # only root connects
    server.token = (cdir.etc / "control.token").read_text().strip()
    def take_out(node: str, cause: str) -> None:
        from cloudhpc.slurm.client import SlurmClient, on_this_node

        SlurmClient(on_this_node()).take_out(node, cause)

    server.controller = Controller(plan, provider, template.local.capacity,
                                   EventLog(cdir.events), take_out=take_out)
    log.info("control plane for %s listening on %s", plan.cluster, sock)
    server.serve_forever(poll_interval=3600)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # the Azure SDK logs every request and response at INFO: failures are enough here
    logging.getLogger("azure").setLevel(logging.WARNING)
    socket.setdefaulttimeout(None)
    serve(sys.argv[1])
