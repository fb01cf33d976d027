"""VM sandboxes for the rehearsal: each VM a machine of its own on this one.

A VM is a network namespace with one interface on its virtual network's bridge (the NIC's
address; the only routes lead to the platform's addresses: instance metadata, DNS, and —
with a public IP — Azure's endpoints; nothing reaches the internet), a root file system that
is an overlay of the node image with the VM's own disk (kept across reboots), private /run,
/tmp, /dev, and **real systemd as PID 1**, which runs **real cloud-init** on the VM's custom
data (a NoCloud seed: instance id = vmId, host name = computerName), as Azure's Linux VMs do.

    nsenter --net=VM unshare --mount --uts --pid --fork sh -c 'mounts; exec
        chroot ROOT /lib/systemd/systemd'

Rebooting stops every process of the VM and boots its disk again: the same instance id, so
cloud-init's per-instance modules do not run again (what a reboot on Azure does)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cloudhpc.image.build import Image
from cloudhpc.runner import Result, Runner
from cloudhpc.secretfile import write_secret

CGROUP = Path("/sys/fs/cgroup/systemd")
GATEWAY_HOST = 1  # Azure's default gateway: the subnet's first host address
IMDS = "169.254.169.254"
WIRESERVER = "168.63.129.16"  # Azure's DNS and platform address
PLATFORM = "198.18.0.0/24"    # the rehearsal's stand-ins for Azure's public endpoints
STORAGE_ENDPOINT = "198.18.0.11"  # blob storage's stand-in (platform.BLOB_ADDRESS)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def short(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


RUN = Runner()


def _ip(*args: str, check: bool = True) -> Result:
    return RUN.run(["ip", *args], check=check)


@dataclass
class VmSpec:
    vm_id: str          # Azure resource id
    instance_id: str    # vmId (cloud-init's instance id)
    hostname: str       # computerName
    address: str
    prefix: int
    bridge: str
    gateway: str
    custom_data: str    # base64
    outbound: bool      # a public IP or a NAT gateway: Azure's endpoints are reachable
    image_lower: str    # overlay lowerdir
    nfs_dir: str = ""   # this machine's stand-in for the VNet's NFS exports
    admin_user: str = ""
    ssh_keys: tuple[str, ...] = ()
    vnet_prefixes: tuple[str, ...] = ()  # the whole VNet is reachable (Azure's system routes)
    # a Microsoft.Storage service endpoint on the subnet: storage reachable without a way out
    storage_endpoint: bool = False


class Sandbox:
    """One VM's processes, disk and network."""

    def __init__(self, root: Path, spec: VmSpec) -> None:
        self.spec = spec
        self.dir = root / short(spec.vm_id, 16)
        self.netns = f"rhv-{short(spec.vm_id)}"
        self.veth = f"rhv{short(spec.vm_id)}"

    @property
    def pid_file(self) -> Path:
        return self.dir / "init.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def _network(self) -> None:
        s = self.spec
        if not Path(f"/run/netns/{self.netns}").exists():
            _ip("netns", "add", self.netns)
        _ip("-n", self.netns, "link", "set", "lo", "up")
        if _ip("link", "show", self.veth, check=False).returncode != 0:
            _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns",
                self.netns)
        _ip("link", "set", self.veth, "master", s.bridge, "up")
        _ip("-n", self.netns, "addr", "replace", f"{s.address}/{s.prefix}", "dev", "eth0")
        _ip("-n", self.netns, "link", "set", "eth0", "up")
        routes = [f"{IMDS}/32", f"{WIRESERVER}/32"] + ([PLATFORM] if s.outbound else [])
        if s.storage_endpoint and not s.outbound:
            routes.append(f"{STORAGE_ENDPOINT}/32")
        for dest in routes:
            _ip("-n", self.netns, "route", "replace", dest, "via", s.gateway)
        # the VNet's other subnets: on the same bridge here, so on-link (this machine
        # forwards nothing)
        for prefix in s.vnet_prefixes:
            if ipaddress.ip_address(s.address) not in ipaddress.ip_network(prefix):
                _ip("-n", self.netns, "route", "replace", prefix, "dev", "eth0")

    def _seed(self) -> None:
        s = self.spec
        seed = self.dir / "upper" / "var" / "lib" / "cloud" / "seed" / "nocloud"
        seed.mkdir(parents=True, exist_ok=True)
        (seed / "meta-data").write_text(f"instance-id: {s.instance_id}\n"
                                        f"local-hostname: {s.hostname}\n")
        user_data = base64.b64decode(s.custom_data) if s.custom_data else b""
        write_secret(seed / "user-data", user_data)  # it holds the VM's secrets
        # what Azure's provisioning does for every Linux VM: the admin user with its keys
        # (osProfile), given as the platform's vendor data
        vendor = {"users": [{"name": s.admin_user, "shell": "/bin/bash",
                             "sudo": "ALL=(ALL) NOPASSWD:ALL",
                             "ssh_authorized_keys": list(s.ssh_keys)}]} if s.admin_user else {}
        (seed / "vendor-data").write_text("#cloud-config\n" + json.dumps(vendor) + "\n")
        # what Azure's DHCP gives a VM: its DNS server
        etc = self.dir / "upper" / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        resolv = etc / "resolv.conf"
        if resolv.is_symlink() or resolv.exists():
            resolv.unlink()
        resolv.write_text(f"nameserver {WIRESERVER}\nsearch internal.cloudapp.net\n")

    def _boot_script(self, cgroup: Path) -> str:
        d, root = self.dir, self.dir / "root"
        q = shlex.quote
        lines = [
            "set -e",
            f"mount -t overlay overlay -o lowerdir={self.spec.image_lower},"
            f"upperdir={d}/upper,workdir={d}/work {root}",
            f"mount -t proc proc {root}/proc",
            f"mount -t sysfs sysfs {root}/sys",
            f"mount -t tmpfs -o mode=755 tmpfs {root}/run",
            *([f"mkdir -p {root}/run/rehearsal/nfs",
               f"mount --bind {self.spec.nfs_dir} {root}/run/rehearsal/nfs"]
              if self.spec.nfs_dir else []),
            f"mount -t tmpfs -o mode=1777 tmpfs {root}/tmp",
            f"mount -t tmpfs -o mode=755 tmpfs {root}/dev",
            *[f"touch {root}/dev/{n} && mount --bind /dev/{n} {root}/dev/{n}" for n in DEVICES],
            f"mkdir -p {root}/dev/pts {root}/dev/shm",
            f"mount -t devpts -o newinstance,ptmxmode=0666 devpts {root}/dev/pts",
            f"ln -s pts/ptmx {root}/dev/ptmx",
            f"mount -t tmpfs -o mode=1777 tmpfs {root}/dev/shm",
            f"touch {root}/dev/console && mount --bind {d}/console.log {root}/dev/console",
            f"mount -t tmpfs -o mode=755 tmpfs {root}/sys/fs/cgroup",
            f"mkdir {root}/sys/fs/cgroup/systemd",
            f"mount --bind {cgroup} {root}/sys/fs/cgroup/systemd",
            f"echo $$ > {cgroup}/cgroup.procs",
            f"exec chroot {q(str(root))} /lib/systemd/systemd --system --log-target=console",
        ]
        return "\n".join(lines)

    def boot(self) -> int:
        if (pid := self.pid()) is not None:
            return pid
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        if self.spec.nfs_dir:
            Path(self.spec.nfs_dir).mkdir(parents=True, exist_ok=True)
        (self.dir / "spec.json").write_text(json.dumps(asdict(self.spec)))
        self._network()
        self._seed()
        boots = len(list(self.dir.glob("console*.log")))
        console = self.dir / "console.log"
        if console.exists():
            console.rename(self.dir / f"console-{boots}.log")
        console.touch()
        cgroup = CGROUP / "cloudhpc-rehearsal" / f"{short(self.spec.vm_id, 16)}-{time.time_ns()}"
        cgroup.mkdir(parents=True)
        (self.dir / "cgroup").write_text(str(cgroup))
        pid = RUN.start(
            # nsenter joins the VM's network namespace (`unshare --net=FILE` would make a
            # new one and mount it over FILE)
            ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--mount", "--uts",
             "--pid", "--fork", "--propagation", "private", "sh", "-c",
             self._boot_script(cgroup)],
            self.dir / "boot.log", {"container": "cloudhpc-rehearsal"})
        self.pid_file.write_text(str(pid))
        return pid

    def processes(self) -> list[int]:
        out = _ip("netns", "pids", self.netns, check=False).stdout.split()
        return [int(p) for p in out]

    def stop(self) -> None:
        """Power off at once (Azure's deallocate/delete does not wait for a clean
        shutdown either): every process of the VM, then its cgroup."""
        for _ in range(20):
            pids = self.processes()
            pid = self.pid()
            if pid:
                pids.append(pid)
            if not pids:
                break
            for p in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        cg = self.dir / "cgroup"
        if cg.exists():
            _remove_cgroup(Path(cg.read_text()))
            cg.unlink()

    def delete(self) -> None:
        self.stop()
        _ip("link", "del", self.veth, check=False)
        _remove_netns(self.netns)
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, *argv: str, timeout: float = 60) -> Result:
        """A command inside the VM (as its root would run it from a console)."""
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"the VM {self.spec.hostname} is not running")
        children = RUN.run(["pgrep", "-P", str(pid)], check=False).stdout.split()
        init = children[0] if children else str(pid)  # unshare --fork's child: the VM's PID 1
        return RUN.run(["nsenter", "-t", init, "-a", "-r", "-w", *argv], check=False,
                       timeout=timeout)


def _remove_cgroup(path: Path) -> None:
    if not path.exists():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _remove_netns(name: str) -> None:
    path = Path("/run/netns") / name
    for _ in range(10):
        if not path.exists():
            return
        _ip("netns", "del", name, check=False)
        if path.exists():
            RUN.run(["umount", str(path)], check=False)
            try:
                path.unlink()
            except OSError:
                time.sleep(0.1)


def image_lower(image: Image) -> str:
    return image.lowerdirs
