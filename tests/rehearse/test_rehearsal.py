"""`cloudhpc up examples/azure-hb.yaml --rehearse`, end to end on this machine: the exported
ARM template deployed through the Azure SDK to the rehearsal's Resource Manager, VMs booted
as sandboxes from the node image (real systemd, real cloud-init on their custom data), the
head's control plane scaling RDMA nodes from zero through the SDK with its managed identity,
an MPI job across two of them, idle nodes removed, a rebooted VM rejoining, `down` leaving
nothing behind."""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudhpc.rehearse.platform import VmPlatform
from cloudhpc.rehearse.vms import Sandbox

ROOT = Path(__file__).resolve().parents[2]
CIDR = "198.19.66.0/24"
NAME = "hbdemo"
pytestmark = pytest.mark.integration


@dataclass
class Rehearsal:
    home: Path
    outputs: dict[str, Any]
    up_seconds: float

    @property
    def root(self) -> Path:
        return self.home / "rehearsal"

    def env(self) -> dict[str, str]:
        return {**os.environ, "CLOUDHPC_HOME": str(self.home)}

    def vm(self, hostname: str) -> Sandbox:
        platform = VmPlatform(self.root, self.root / "platform")
        for box in platform.running():
            if box.spec.hostname == hostname:
                return box
        raise AssertionError(f"no VM {hostname}")

    def sh(self, hostname: str, script: str, timeout: float = 120) -> str:
        out = self.vm(hostname).run("sh", "-c", script, timeout=timeout)
        assert out.returncode == 0, f"{hostname}: {script}: {out.stderr}{out.stdout}"
        return out.stdout

    def world(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "world.json").read_text())
        return data["resources"]

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cloudhpc.cli", *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout)


def _wait(what: str, check: Any, timeout: float, every: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    home = tmp_path_factory.mktemp("rehearsal-home")
    template = yaml.safe_load((ROOT / "examples" / "azure-hb.yaml").read_text())
    template["network"]["cidr"] = CIDR  # this machine's test range
    for ns in template["compute"]:
        ns["idle_timeout"] = 30  # the example keeps idle nodes longer
    # a login node (issue 13, item 5), of a size the capacity below does not limit
    template["login"] = [{"name": "login", "size": "Standard_D2s_v5", "public_ip": False}]
    path = home / "azure-hb.yaml"
    path.write_text(yaml.safe_dump(template))
    r = Rehearsal(home, {}, 0.0)
    began = time.monotonic()
    try:
        # the region has room for two D4s_v5 (serial-1 and one more): a third fails late
        up = r.cli("up", str(path), "--rehearse", "--json", "--rehearse-capacity",
                   "Standard_D4s_v5=2", timeout=1800)
        assert up.returncode == 0, up.stderr[-3000:]
        r.up_seconds = time.monotonic() - began
        r.outputs = json.loads(up.stdout)["outputs"]
        yield r
    finally:
        down = r.cli("down", NAME, timeout=600)
        print(down.stdout, down.stderr)
        subprocess.run([sys.executable, "-c", "from cloudhpc.rehearse import daemon; "
                        "daemon.stop_all()"], env=r.env(), timeout=300)


def test_the_head_answers_over_https_with_its_own_certificate(rehearsal: Rehearsal) -> None:
    cert = rehearsal.sh("head", f"cat /var/lib/cloudhpc/clusters/{NAME}/etc/api.crt")
    ca = rehearsal.home / "head-api.crt"
    ca.write_text(cert)
    context = ssl.create_default_context(cafile=str(ca))
    url = f"https://{rehearsal.outputs['headPrivateIp']}:8443/healthz"
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        assert answer.status == 200
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
        # plain HTTP is not served
        urllib.request.urlopen(url.replace("https", "http"), timeout=5)


def test_the_static_node_joins_from_its_custom_data(rehearsal: Rehearsal) -> None:
    state = _wait("serial-1 idle", lambda: rehearsal.sh(
        "head", "sinfo -h -n serial-1 -o %T").strip() == "idle", 300)
    assert state
    # cloud-init ran the custom data; nothing was installed at boot
    log = rehearsal.sh("serial-1", "cat /var/log/cloud-init-output.log")
    assert "Created symlink /etc/systemd/system/multi-user.target.wants/cloudhpc-node" in log
    assert installs(log) == [], installs(log)


# what apt, dpkg and pip print when they install; ssh-keygen's fingerprints and randomart
# (random letters, so they may spell "apt") are not looked at
INSTALLING = re.compile(r"^(Reading package lists|Get:\d+ |Unpacking |Setting up |Collecting |"
                        r"Successfully installed|Installing collected)|\b(apt|apt-get|dpkg|"
                        r"pip3?)\b")


def installs(log: str) -> list[str]:
    """The lines of a cloud-init output log that show a package being installed."""
    return [line for line in log.splitlines()
            if not line.startswith(("SHA256:", "|", "+")) and "root@" not in line
            and INSTALLING.search(line)]


CLI = "CLOUDHPC_HOME=/var/lib/cloudhpc /opt/cloudhpc/bin/cloudhpc"


def test_staging_reaches_the_storage_account_through_the_heads_managed_identity(
        rehearsal: Rehearsal) -> None:
    """Finding 10: the head's blob store is the deployment's storage account, reached with
    the head's managed identity (no key anywhere); a job on a compute VM (no way out, no
    identity) stages in and out through its user delegation SAS over the subnet's service
    endpoint."""
    account = json.loads(rehearsal.sh(
        "head", f"cat /var/lib/cloudhpc/clusters/{NAME}/etc/blob.json"))
    assert account["key"] == "" and account["identity"] is True
    assert account["endpoint"] == f"https://{rehearsal.outputs['storageAccount']}" \
        ".blob.core.windows.net"
    _wait("serial-1 idle", lambda: rehearsal.sh(
        "head", "sinfo -h -n serial-1 -o %T").strip() == "idle", 300)
    script = "#!/bin/sh\ntr a-z A-Z < in.txt > out.txt\n"
    out = rehearsal.sh("head", f"""set -e
{CLI} storage mkdir data -c {NAME}
echo rehearsed > /tmp/in.txt
{CLI} storage put /tmp/in.txt blob://data/in.txt -c {NAME}
printf '{script}' > /tmp/upper.sh
{CLI} submit /tmp/upper.sh -c {NAME} --partition serial --stage-in blob://data/in.txt \
    --stage-out out.txt:blob://data/out.txt --wait
{CLI} storage get blob://data/out.txt /tmp/out.txt -c {NAME}
cat /tmp/out.txt""", timeout=600)
    assert out.strip().endswith("REHEARSED"), out
    # a compute VM has no identity: instance metadata gives it no storage token
    answer = rehearsal.vm("serial-1").run("/opt/cloudhpc/bin/python", "-c", (
        "import urllib.request, urllib.error\n"
        "r = urllib.request.Request('http://169.254.169.254/metadata/identity/oauth2/token"
        "?api-version=2018-02-01&resource=https://storage.azure.com/', "
        "headers={'Metadata': 'true'})\n"
        "try:\n    urllib.request.urlopen(r, timeout=5); print('TOKEN')\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"), timeout=60)
    assert answer.stdout.strip() == "400", answer


def test_users_submit_from_the_login_vm(rehearsal: Rehearsal) -> None:
    """The login node set on Azure: a VM with munge, the Slurm clients and /shared, no
    slurmd, no identity and no control token; a job submitted there runs on serial-1."""
    _wait("serial-1 idle", lambda: rehearsal.sh(
        "head", "sinfo -h -n serial-1 -o %T").strip() == "idle", 300)
    _wait("munge on login-1", lambda: rehearsal.sh(
        "login-1", "munge -n </dev/null >/dev/null 2>&1 && echo ok || true").strip() == "ok",
        300, 3)
    out = rehearsal.sh("login-1", "cd /shared && sbatch --wait -p serial -o login-job.out "
                       "--wrap hostname >/dev/null && cat /shared/login-job.out", timeout=300)
    assert out.strip() == "serial-1", out
    assert rehearsal.sh("login-1", "pgrep -x slurmd || echo none").strip() == "none"
    assert rehearsal.sh("login-1", "ls /etc/cloudhpc").split() == [
        "cluster.json", "munge.key.b64"]  # no control token


def test_homes_are_the_same_on_every_vm_and_keep_the_admins_key(rehearsal: Rehearsal) -> None:
    """Issue 13, item 5 on Azure: the head exports the users' homes and every other VM
    mounts them, bound at /home like /shared; the admin's home with the deployment's SSH key
    (made by Azure on each VM's disk, hidden by that bind) is in them. Before, each VM had a
    /home of its own: a file in a home on the head was on no other VM."""
    key = "/home/hpcadmin/.ssh/authorized_keys"
    for vm in ("head", "login-1", "serial-1"):
        _wait(f"/home bound on {vm}", lambda vm=vm: rehearsal.sh(
            vm, "mountpoint -q /home && echo yes || true").strip() == "yes", 300, 3)
        assert rehearsal.sh(vm, f"test -s {key} && echo key").strip() == "key", vm
    rehearsal.sh("head", "echo from-the-head > /home/hpcadmin/probe")
    for vm in ("login-1", "serial-1"):
        assert rehearsal.sh(vm, "cat /home/hpcadmin/probe").strip() == "from-the-head", vm


def test_the_heads_own_routes_ack_at_once(rehearsal: Rehearsal) -> None:
    """slurmctld and slurmdbd talk over the head's own address: Slurm's length-then-body
    messages waited 40 ms per direction for delayed ACKs there (as locally); the VM's
    bootstrap gives its local routes `quickack`, and `sacctmgr` works through them."""
    routes = rehearsal.sh("head", "ip -4 -o route show table local type local")
    assert routes.strip() and all("quickack 1" in line for line in routes.splitlines()), routes
    listed = rehearsal.sh("head", "sacctmgr -n -P list cluster format=cluster")
    assert listed.split() == [NAME], listed


def test_an_mpi_job_runs_across_two_rdma_nodes_started_from_zero_through_the_sdk(
        rehearsal: Rehearsal) -> None:
    script = (ROOT / "examples" / "jobs" / "mpi_pi.sh").read_text()
    rehearsal.sh("head", "mkdir -p /shared/mpi && cat > /shared/mpi/mpi_pi.sh <<'EOS'\n"
                 f"{script}\nEOS")
    job = rehearsal.sh("head", "cd /shared/mpi && sbatch --parsable -p hb -N 2 "
                       "--ntasks-per-node 2 mpi_pi.sh").strip()
    _wait(f"job {job} done", lambda: rehearsal.sh(
        "head", f"sacct -n -X -j {job} -o State").strip() in ("COMPLETED", "FAILED"), 600, 3)
    out = rehearsal.sh("head", f"cat /shared/mpi/slurm-{job}.out")
    assert "CHECK OK" in out, out
    assert {"hb-1", "hb-2"} <= {line.split()[-1] for line in out.splitlines()
                                if line.startswith("rank")}
    # the head scaled the Uniform scale set through the SDK: its instances are Azure's,
    # named by Azure, in the RDMA subnet; each told its node name by the head
    instances = [r for r in rehearsal.world().values()
                 if r["type"] == "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"]
    assert sorted(i["properties"]["osProfile"]["computerName"] for i in instances) == [
        "hb-000000", "hb-000001"]
    addr = rehearsal.sh("head", "scontrol show node hb-1 | grep -o 'NodeAddr=[^ ]*'")
    assert addr.strip().startswith("NodeAddr=198.19.67.")  # learned at registration


def test_a_late_allocation_failure_reaches_slurm(rehearsal: Rehearsal) -> None:
    """Finding 13: Azure accepts a VM and fails it minutes later (AllocationFailed); the
    control plane reports it to Slurm when it arrives, with Azure's message."""
    job = rehearsal.sh("head", "cd /tmp && sbatch --parsable -p serial -N 2 "
                       "-w serial-2,serial-3 --wrap hostname").strip()
    try:
        def reason() -> str:
            out = rehearsal.sh("head", "scontrol show node serial-2,serial-3")
            return out if "AllocationFailed" in out else ""

        out = _wait("AllocationFailed in a node's reason", reason, 180, 3)
        assert "Reason=" in out
        events = rehearsal.sh("head", f"cat /var/lib/cloudhpc/clusters/{NAME}/events.jsonl")
        assert any(json.loads(e).get("kind") == "node_failed" and
                   "AllocationFailed" in json.loads(e).get("cause", "")
                   for e in events.splitlines() if e.strip())
    finally:
        rehearsal.sh("head", f"scancel {job}")


def test_idle_nodes_go_away(rehearsal: Rehearsal) -> None:
    def gone() -> bool:
        return not [r for r in rehearsal.world().values() if r["type"].endswith(
            "virtualMachineScaleSets/virtualMachines")]

    _wait("the idle hb instances deleted", gone, 300, 5)
    assert rehearsal.sh("head", "sinfo -h -n serial-1 -o %T").strip() == "idle"  # min stays


def test_a_rebooted_vm_rejoins(rehearsal: Rehearsal) -> None:
    """Finding 14: runcmd runs once per instance; the unit and fstab bring the node back."""
    from azure.mgmt.compute import ComputeManagementClient

    from cloudhpc.rehearse import daemon

    old = os.environ.get("CLOUDHPC_HOME")
    os.environ["CLOUDHPC_HOME"] = str(rehearsal.home)
    try:
        from cloudhpc.rehearse.run import RehearsalCredential
        client = ComputeManagementClient(RehearsalCredential(), daemon.SUBSCRIPTION,
                                         **daemon.client_kwargs())
        boots = rehearsal.sh("serial-1", "cat /proc/1/stat | cut -d' ' -f22")
        client.virtual_machines.begin_restart(f"cloudhpc-{NAME}", f"{NAME}-serial-1").result()
    finally:
        if old is None:
            os.environ.pop("CLOUDHPC_HOME", None)
        else:
            os.environ["CLOUDHPC_HOME"] = old
    assert _wait("serial-1 booted again", lambda: rehearsal.sh(
        "serial-1", "cat /proc/1/stat | cut -d' ' -f22") != boots, 60)
    _wait("serial-1 back in Slurm", lambda: rehearsal.sh(
        "head", "srun -p serial -w serial-1 -N1 hostname 2>/dev/null || true"
    ).strip() == "serial-1", 300, 5)
    log = rehearsal.sh("serial-1", "cat /var/log/cloud-init-output.log")
    assert log.count("Created symlink /etc/systemd/system/multi-user.target.wants/"
                     "cloudhpc-node") == 1  # runcmd ran once, the unit brought it back


def test_down_removes_every_resource(rehearsal: Rehearsal) -> None:
    down = rehearsal.cli("down", NAME)
    assert down.returncode == 0, down.stderr
    assert not (rehearsal.root / "world.json").exists()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "rhv-" not in netns
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert " rhb" not in links and " rhv" not in links
    lo = subprocess.run(["ip", "addr", "show", "lo"], capture_output=True, text=True).stdout
    assert "169.254.169.254" not in lo
