"""The Azure VM bootstrap, for real: take the cloud-init custom data out of an exported ARM
template, write its files, and run its bootstrap command inside a fresh network namespace
standing in for the head VM. The same supervisor, munged and slurmctld must come up with the
deployment's munge key."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudhpc.azure.arm import decode_custom_data, export
from cloudhpc.azure.cloudinit import CONFIG_PATH, UNIT_PATH
from cloudhpc.plan import make_plan
from cloudhpc.template.loader import load

NS = "t-cinit-head"
TEMPLATE = {"version": 1, "name": "t-cinit", "provider": "azure",
            "network": {"cidr": "198.19.16.0/24"},
            "compute": [{"name": "cn", "size": "Standard_D4s_v5", "min": 1, "max": 1}],
            "azure": {"region": "eastus", "ssh_cidrs": ["198.51.100.0/24"]}}


@pytest.fixture()
def vm_netns(home: Path) -> Iterator[str]:
    """A network namespace holding the head's private address, as its VM NIC would."""
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        model, _ = load(TEMPLATE)
        address = make_plan(model).head.address
        subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", NS, "addr", "add", f"{address}/32", "dev", "lo"],
                       check=True)
        yield NS
    finally:
        pids = subprocess.run(["ip", "netns", "pids", NS], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def test_head_bootstraps_from_its_custom_data(vm_netns: str, home: Path,
                                              tmp_path: Path) -> None:
    model, _ = load(TEMPLATE)
    arm, _ = export(model)
    head = next(r for r in arm["resources"] if r["type"] == "Microsoft.Compute/virtualMachines")
    munge_key = os.urandom(1024)
    secrets = {"mungeKey": base64.b64encode(munge_key).decode(), "clusterToken": "t0k3n"}
    text = base64.b64decode(decode_custom_data(head["properties"]["osProfile"]["customData"],
                                               secrets)).decode()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    etc = tmp_path / "etc-cloudhpc"  # stands for the VM's /etc/cloudhpc
    etc.mkdir()
    for f in doc["write_files"]:
        path = etc / Path(f["path"]).name
        path.write_text(f["content"])
        path.chmod(int(f["permissions"], 8))
    # cloud-init enables the node's unit; the unit runs the bootstrap (at every boot)
    assert doc["runcmd"][-1] == ["systemctl", "enable", "--now", "--no-block",
                                 "cloudhpc-node.service"]
    unit = next(f["content"] for f in doc["write_files"] if f["path"] == UNIT_PATH)
    command = next(line for line in unit.splitlines()
                   if line.startswith("ExecStart="))[len("ExecStart="):].split()
    assert command[1:] == ["-m", "cloudhpc.node.cloudinit", CONFIG_PATH]
    state = tmp_path / "vm-state"
    env = {**os.environ, "CLOUDHPC_HOME": str(state)}
    subprocess.run(["setsid", "-f", "nsenter", f"--net=/run/netns/{vm_netns}", "unshare",
                    "--mount", "--uts", "--", sys.executable, "-m", "cloudhpc.node.cloudinit",
                    str(etc / "cluster.json")], check=True, env=env)
    node_dir = state / "clusters" / "t-cinit" / "nodes" / "head"
    ready = node_dir / "run" / "ready"
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), (node_dir / "logs" / "supervisor.log").read_text()
    pid = (node_dir / "run" / "supervisor.pid").read_text().strip()
    enter = ["nsenter", f"--target={pid}", "--net", "--mount", "--uts", "--"]
    ping = ""
    while time.monotonic() < deadline:
        ping = subprocess.run([*enter, "scontrol", "ping"], capture_output=True,
                              text=True).stdout
        if "UP" in ping:
            break
        time.sleep(0.2)
    assert "Slurmctld(primary) at head is UP" in ping
    assert subprocess.run([*enter, "hostname"], capture_output=True,
                          text=True).stdout.strip() == "head"
    key_file = state / "clusters" / "t-cinit" / "etc" / "munge.key"
    assert key_file.read_bytes() == munge_key
    assert oct(key_file.stat().st_mode & 0o777) == "0o400"
    cred = subprocess.run([*enter, "sh", "-c", "munge -n | unmunge"], capture_output=True,
                          text=True)
    assert "STATUS:          Success" in cred.stdout, cred.stderr
    # the head's REST API finds its cluster (issue 14, finding 9: it exited, "no cluster")
    # and answers over HTTPS with the certificate made on the VM
    model_plan = make_plan(model)
    probe = ("import ssl, sys, urllib.request; c = ssl.create_default_context(cafile=sys.argv[2]);"
             "print(urllib.request.urlopen(sys.argv[1], context=c, timeout=5).status)")
    cert = state / "clusters" / "t-cinit" / "etc" / "api.crt"
    url = f"https://{model_plan.head.address}:8443/healthz"
    answer = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = subprocess.run([*enter, sys.executable, "-c", probe, url, str(cert)],
                                capture_output=True, text=True)
        if answer.stdout.strip() == "200":
            break
        time.sleep(0.5)
    api_log = node_dir / "logs" / "api.log"
    assert answer is not None and answer.stdout.strip() == "200", (
        answer.stderr if answer else "", api_log.read_text() if api_log.exists() else "")


def test_user_prolog_makes_the_jobs_user_on_a_vm_with_its_own_user_database(
        tmp_path: Path) -> None:
    """On Azure each VM has its own /etc/passwd: Slurm's Prolog (written by the bootstrap,
    named in slurm.conf) makes the job's user with Slurm's uid and gid. Run for real in a
    mount namespace whose /etc is a private overlay standing for the VM's; the machine's own
    user database is untouched."""
    from cloudhpc.slurm.conf import NODE_USER_PROLOG, USER_PROLOG, SlurmPaths, render

    model, _ = load(TEMPLATE)
    assert f"Prolog={NODE_USER_PROLOG}\n" in render(make_plan(model), SlurmPaths("/x"))
    prolog = tmp_path / "prolog.sh"
    prolog.write_text(USER_PROLOG)
    prolog.chmod(0o755)
    for d in ("upper", "work"):
        (tmp_path / d).mkdir()
    script = (f"mount -t overlay overlay -o lowerdir=/etc,upperdir={tmp_path}/upper,"
              f"workdir={tmp_path}/work /etc && {prolog} && {prolog} && "
              "getent passwd cht-vmuser && getent group 42424")
    env = {**os.environ, "SLURM_JOB_USER": "cht-vmuser", "SLURM_JOB_UID": "42424",
           "SLURM_JOB_GID": "42424"}
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                          script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    passwd, group = out.stdout.splitlines()
    assert passwd.startswith("cht-vmuser:x:42424:42424:") and passwd.endswith(":/bin/bash")
    assert group.startswith("cht-vmuser:x:42424:")
    assert subprocess.run(["getent", "passwd", "cht-vmuser"]).returncode == 2  # not here


def _custom_data(vm: dict[str, Any], secrets: dict[str, str]) -> dict[str, Any]:
    text = base64.b64decode(decode_custom_data(vm["properties"]["osProfile"]["customData"],
                                               secrets)).decode()
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def _write_files(doc: dict[str, Any], etc: Path) -> Path:
    """The files cloud-init would write to /etc/cloudhpc, into ETC; the config's path."""
    etc.mkdir()
    for f in doc["write_files"]:
        if f["path"].startswith("/etc/cloudhpc/"):
            path = etc / Path(f["path"]).name
            path.write_text(f["content"])
            path.chmod(int(f["permissions"], 8))
    return etc / "cluster.json"


@pytest.fixture()
def two_vms(home: Path) -> Iterator[tuple[str, str]]:
    """The head's and cn-1's network namespaces joined by a veth pair, at their plan
    addresses, as the two VMs' NICs on the cluster's subnet would be."""
    model, _ = load(TEMPLATE)
    plan = make_plan(model)
    names = (NS, "t-cinit-cn-1")
    try:
        for ns in names:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "link", "add", "tcinit0", "netns", names[0], "type", "veth",
                        "peer", "name", "tcinit1", "netns", names[1]], check=True)
        for ns, dev, node in ((names[0], "tcinit0", "head"), (names[1], "tcinit1", "cn-1")):
            address = plan.node(node).address  # type: ignore[union-attr]
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev],
                           check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        yield names
    finally:
        for ns in names:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_min_node_bootstraps_from_its_custom_data_and_runs_jobs(
        two_vms: tuple[str, str], tmp_path: Path) -> None:
    """The static node cn-1 of the exported template (a named VM in its scale set) boots
    from its own custom data: /shared mounted from the head first (a bind mount stands for
    the NFS mount, in the same order), then the bootstrap; its slurmd registers with the
    head's slurmctld over the subnet and a job runs on it, through Slurm's Prolog, and sees
    what the head put in /shared."""
    model, _ = load(TEMPLATE)
    arm, _ = export(model)
    vms = {r["name"]: r for r in arm["resources"]
           if r["type"] == "Microsoft.Compute/virtualMachines"}
    secrets = {"mungeKey": base64.b64encode(os.urandom(1024)).decode(),
               "clusterToken": "t0k3n"}
    head_doc = _custom_data(vms["t-cinit-head"], secrets)
    cn_doc = _custom_data(vms["t-cinit-cn-1"], secrets)  # Azure's name: cluster first
    fstab = next(c for c in cn_doc["runcmd"] if c[0] == "sh")[2]
    assert " nfs vers=4.2,hard" in fstab  # the NFS mount (fstab); a bind mount stands in
    head_shared = tmp_path / "vm-head" / "clusters" / "t-cinit" / "shared"
    for ns, doc, node in ((two_vms[0], head_doc, "head"), (two_vms[1], cn_doc, "cn-1")):
        config = _write_files(doc, tmp_path / f"etc-{node}")
        state = tmp_path / f"vm-{node}"  # each VM its own disk
        shared = state / "clusters" / "t-cinit" / "shared"
        shared.mkdir(parents=True)
        step = f"exec {sys.executable} -m cloudhpc.node.cloudinit {config} {node}"
        if node != "head":  # the NFS mount of the head's /shared, before the bootstrap
            step = f"mount --bind {head_shared} {shared} && {step}"
        subprocess.run(["setsid", "-f", "nsenter", f"--net=/run/netns/{ns}", "unshare",
                        "--mount", "--propagation", "private", "--uts", "--", "sh", "-c",
                        step], env={**os.environ, "CLOUDHPC_HOME": str(state)}, check=True)
    head_dir = tmp_path / "vm-head" / "clusters" / "t-cinit" / "nodes" / "head"
    deadline = time.monotonic() + 60
    while not (head_dir / "run" / "supervisor.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = (head_dir / "run" / "supervisor.pid").read_text().strip()
    enter = ["nsenter", f"--target={pid}", "--net", "--mount", "--uts", "--"]
    state = ""
    while time.monotonic() < deadline:
        state = subprocess.run([*enter, "sinfo", "-h", "-n", "cn-1", "-o", "%T"],
                               capture_output=True, text=True).stdout.strip()
        if state == "idle":
            break
        time.sleep(0.5)
    assert state == "idle", (tmp_path / "vm-cn-1" / "clusters" / "t-cinit" / "nodes" /
                             "cn-1" / "logs" / "supervisor.log").read_text()[-2000:]
    (head_shared / "from-head").write_text("hi")
    out = subprocess.run([*enter, "srun", "-N1", "-w", "cn-1", "sh", "-c",
                          "hostname; cat /shared/from-head"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["cn-1", "hi"], out.stderr
