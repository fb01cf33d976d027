"""`cloudhpc rehearse serve`: the rehearsal's stand-in for Azure on this machine, one
process — Resource Manager (HTTPS, 198.18.0.10:443 = management.azure.com), instance metadata
(169.254.169.254:80) and DNS (168.63.129.16:53) — over the VM sandboxes it boots. Its state
(what is deployed, the tokens it issued) is kept in $CLOUDHPC_HOME/rehearsal, so it can stop
and start again without losing the deployment; the VMs run on meanwhile."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cloudhpc.errors import CloudHPCError
from cloudhpc.paths import home
from cloudhpc.rehearse import pki
from cloudhpc.rehearse.blobs import BlobService, stop_leftover
from cloudhpc.rehearse.engine import Engine
from cloudhpc.rehearse.platform import (
    ARM_ADDRESS,
    BLOB_ADDRESS,
    VmPlatform,
    add_host_addresses,
    remove_host_addresses,
)
from cloudhpc.rehearse.services import dns_server, imds_app, new_token
from cloudhpc.rehearse.vms import IMDS, WIRESERVER
from cloudhpc.runner import Runner
from cloudhpc.secretfile import write_secret

SUBSCRIPTION = "00000000-0000-0000-0000-0000c10dc0de"  # the rehearsal's subscription
ARM_URL = f"https://{ARM_ADDRESS}"


def root() -> Path:
    path = home() / "rehearsal"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class Tokens:
    """Bearer tokens the rehearsal issued: the CLI's, and the managed identities' (from
    instance metadata). Kept 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        if "cli" not in self.known.values():
            self.known[new_token()] = "cli"
            self._save()

    def _save(self) -> None:
        write_secret(self.path, json.dumps(self.known))

    def issue(self, principal: str) -> str:
        with self.lock:
            token = new_token()
            self.known[token] = principal
            self._save()
            return token

    def __contains__(self, token: object) -> bool:
        return token in self.known


def cli_token() -> str:
    data: dict[str, str] = json.loads((root() / "tokens.json").read_text())
    return next(t for t, who in data.items() if who == "cli")


# This kernel has neither an NFS server nor an NFS client. In the rehearsal's VMs, exportfs
# and mount.nfs stand in for NFS: an exported directory becomes a directory of this machine
# (under /run/rehearsal/nfs/<server address>/, which every VM of the VNet sees), bound over
# the export on the server and over the mount point on the client. No root squash.
_EXPORTFS = """#!/bin/sh
# cloudhpc rehearsal: NFS exports stand-in (this kernel has no nfsd)
me=$(ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
cat /etc/exports /etc/exports.d/*.exports 2>/dev/null | grep -v '^#' | awk 'NF {print $1}' |
while read -r path; do
  store=/run/rehearsal/nfs/$me$path
  mountpoint -q "$path" && continue
  mkdir -p "$store" "$path"
  cp -a "$path/." "$store/" 2>/dev/null || true
  mount --bind "$store" "$path"
done
"""
_MOUNT_NFS = """#!/bin/sh
# cloudhpc rehearsal: NFS mount stand-in (this kernel has no NFS client)
server=${1%%:*}
path=${1#*:}
store=/run/rehearsal/nfs/$server$path
[ -d "$store" ] || { echo "mount.nfs: $1: the server does not export it (yet)" >&2; exit 32; }
exec mount --bind "$store" "$2"
"""
_NFS_SERVER = """[Unit]
Description=NFS server (cloudhpc rehearsal stand-in: exportfs binds the exports)

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/exportfs -ra

[Install]
WantedBy=multi-user.target
"""
NFS_STAND_IN = [("usr/sbin/exportfs", _EXPORTFS, 0o755),
                ("usr/sbin/mount.nfs", _MOUNT_NFS, 0o755),
                ("usr/sbin/mount.nfs4", _MOUNT_NFS, 0o755),
                ("etc/systemd/system/nfs-server.service", _NFS_SERVER, 0o644)]


def platform_layer(base: Path, ca: Path, dest: Path) -> Path:
    """Files the rehearsal adds over the node image: trust in the rehearsal's CA (in the
    system's bundle and in certifi's, which the Azure SDK uses)."""
    if (dest / ".complete").exists():
        return dest
    extra = ca.read_text()
    bundles = [Path("etc/ssl/certs/ca-certificates.crt")]
    bundles += [p.relative_to(base) for p in (base / "opt/cloudhpc/lib").glob(
        "python3*/site-packages/certifi/cacert.pem")]
    for rel in bundles:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((base / rel).read_text() + "\n" + extra)
    local = dest / "usr/local/share/ca-certificates/cloudhpc-rehearsal.crt"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(extra)
    for name, text, mode in NFS_STAND_IN:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
    (dest / ".complete").touch()
    return dest


class _LayeredPlatform(VmPlatform):
    """VmPlatform whose platform layer is made for the base image a VM boots from."""

    def __init__(self, rroot: Path, ca: Path, blobs: BlobService) -> None:
        super().__init__(rroot, rroot / "platform", blobs)
        self.ca = ca

    def _image(self, vm: dict[str, Any], world: dict[str, dict[str, Any]]) -> str:
        lower = super()._image(vm, world)
        base = Path(lower.rsplit(":", 1)[1])
        layer = platform_layer(base, self.ca, self.root / f"platform-{abs(hash(base)) % 10**8}")
        return f"{layer}:{lower.split(':', 1)[1]}"


def serve(caller_role: str = "Owner") -> None:
    import uvicorn

    from cloudhpc.rehearse.server import create_app

    rroot = root()
    ca, crt, key = pki.ensure(rroot / "pki", [ARM_ADDRESS, BLOB_ADDRESS])
    tokens = Tokens(rroot / "tokens.json")
    blobs = BlobService(rroot, BLOB_ADDRESS, crt, key)
    platform = _LayeredPlatform(rroot, ca, blobs)
    engine = Engine.load(rroot / "world.json", platform, caller_role)
    engine.capacity_file = rroot / "capacity.json"
    add_host_addresses()
    blobs.resume()
    arm = uvicorn.Server(uvicorn.Config(create_app(engine, tokens), host=ARM_ADDRESS,  # type: ignore[arg-type]
                                        port=443, ssl_certfile=str(crt), ssl_keyfile=str(key),
                                        log_level="warning"))
    imds = uvicorn.Server(uvicorn.Config(imds_app(engine, tokens.issue), host=IMDS, port=80,
                                         log_level="warning"))
    dns = dns_server(engine, WIRESERVER, {"management.azure.com": ARM_ADDRESS},
                     {".blob.core.windows.net": BLOB_ADDRESS})
    dns.start_thread()
    threads = [threading.Thread(target=s.run, daemon=True) for s in (arm, imds)]
    for t in threads:
        t.start()
    while not (arm.started and imds.started) and all(t.is_alive() for t in threads):
        time.sleep(0.05)
    (rroot / "serve.pid").write_text(str(os.getpid()))
    (rroot / "ready").write_text(str(os.getpid()))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and all(t.is_alive() for t in threads):
            stop.wait(0.5)
    finally:
        arm.should_exit = imds.should_exit = True
        dns.stop()
        blobs.stop()
        (rroot / "ready").unlink(missing_ok=True)
        (rroot / "serve.pid").unlink(missing_ok=True)


def running() -> int | None:
    try:
        pid = int((root() / "serve.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def ensure_running(timeout: float = 30) -> None:
    """Start `cloudhpc rehearse serve` in the background unless it runs; wait for it."""
    ready = root() / "ready"
    if running() is None:
        ready.unlink(missing_ok=True)
        Runner().start([sys.executable, "-m", "cloudhpc.rehearse", "serve"],
                       root() / "serve.log", dict(os.environ))
    # no probe of the address before it is this machine's: it would leave by the default route
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists() and running() is not None:
            return
        time.sleep(0.1)
    raise CloudHPCError("the rehearsal's Resource Manager did not start",
                        hint=f"see {root() / 'serve.log'}")


def stop_all() -> None:
    """Stop the endpoint, every VM sandbox and bridge it made, and its host addresses."""
    pid = running()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if running() is None:
                break
            time.sleep(0.1)
    rroot = root()
    platform = VmPlatform(rroot, rroot / "platform")
    world = rroot / "world.json"
    if world.exists():
        for r in json.loads(world.read_text())["resources"].values():
            platform.delete(r)
    for sandbox in platform.running():
        sandbox.delete()
    stop_leftover(rroot)
    shutil.rmtree(rroot / "blob", ignore_errors=True)
    remove_host_addresses()
    world.unlink(missing_ok=True)
    shutil.rmtree(rroot / "vms", ignore_errors=True)


def client_kwargs() -> dict[str, Any]:
    """What the Azure SDK needs to talk to the rehearsal instead of Azure."""
    return {"base_url": ARM_URL, "connection_verify": str(root() / "pki" / "ca.crt"),
            "polling_interval": 1}
