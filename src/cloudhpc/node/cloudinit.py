"""The node bootstrap an Azure VM runs from its cloud-init custom data:

    python -m cloudhpc.node.cloudinit /etc/cloudhpc/cluster.json

It reads the cluster description cloud-init wrote (template, role, node set) with the munge
key and control token beside it (from secure deployment parameters), writes the same cluster
files the local provider writes, and runs the same supervisor with the same daemons, in this
machine's own namespaces (the VM is the node). The local integration tests run exactly this
inside a network namespace."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import sys
from pathlib import Path

from cloudhpc.errors import CloudHPCError
from cloudhpc.node import bootstrap
from cloudhpc.paths import ClusterDir, home
from cloudhpc.plan import NodeSpec, Plan, make_plan
from cloudhpc.runner import Runner
from cloudhpc.secretfile import READ_ONLY, write_secret
from cloudhpc.state import Store
from cloudhpc.storage.account import BlobAccount
from cloudhpc.template.schema import Template


def _secret(config_dir: Path, name: str) -> bytes:
    path = config_dir / name
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise CloudHPCError(f"cloud-init left no {path}: {exc.strerror}",
                            hint="check the deployment's secure parameters") from None


def _assigned(cdir: ClusterDir, nodeset: str | None, computer: str) -> str | None:
    """The Slurm node name the head gave this instance of a Uniform scale set (its file in
    /shared, root's; the name must be one of this node set's)."""
    from cloudhpc.azure.uniform import NAMES_DIR

    try:
        name = (cdir.shared / NAMES_DIR / computer).read_text().strip()
    except OSError:
        return None
    return name if nodeset and name.startswith(f"{nodeset}-") else None


def adopt_admin_home(admin: str, homes: Path, system_homes: Path = Path("/home")) -> None:
    """The cluster's homes (exported by the head, mounted by every other VM) are bound over
    /home on every VM, which would hide the home Azure made for the admin user, and with it
    the SSH key of the deployment: the head copies that home into the cluster's homes once
    (the other VMs then see it over NFS; the admin has the same uid on every VM of the
    image)."""
    source, dest = system_homes / admin, homes / admin
    if not source.is_dir() or source.is_symlink() or dest.exists():
        return
    tmp = homes / f".{admin}.adopting"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, symlinks=True)
    st = source.stat()
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.rename(tmp, dest)


def _this_node(plan: Plan, role: str, name: str, cdir: ClusterDir | None = None,
               nodeset: str | None = None) -> NodeSpec:
    if role == "head":
        return plan.head
    node = plan.node(name)
    uniform = next((s for s in plan.nodesets if s.name == nodeset and s.uniform), None)
    if node is None and uniform is not None and cdir is not None:
        assigned = _assigned(cdir, nodeset, name)
        if assigned is None:
            raise CloudHPCError(f"the head has not named this instance ({name}) yet",
                                hint="systemd starts the bootstrap again in a few seconds")
        node = plan.node(assigned)
    if node is None:
        raise CloudHPCError(f"this machine's name {name!r} is no node of cluster "
                            f"{plan.cluster!r}", hint="VMs must be named after Slurm nodes")
    return node


def prepare(config_path: Path, node_name: str | None = None) -> Path:
    """Write the cluster's files and this node's supervisor spec; return the spec's path."""
    config = json.loads(config_path.read_text())
    template = Template.model_validate(config["template"])
    plan = make_plan(template)
    cdir = ClusterDir.of(template.name, home())
    cdir.etc.mkdir(parents=True, exist_ok=True)
    key = base64.b64decode(_secret(config_path.parent, "munge.key.b64"), validate=True)
    if len(key) < 32:
        raise CloudHPCError("the munge key from the deployment is shorter than 32 bytes",
                            hint="pass mungeKey=$(head -c 1024 /dev/urandom | base64 -w0)")
    write_secret(cdir.munge_key, key, mode=READ_ONLY)
    head = config["role"] == "head"
    if head:  # the control plane's token: the head's alone (compute VMs are not given it)
        write_secret(cdir.etc / "control.token", _secret(config_path.parent, "control.token"))
    cdir.write_template(config["template"])
    if head and config.get("storage_account"):
        # the deployment's storage account, through this VM's managed identity: no key
        BlobAccount.managed(config["storage_account"]).save(cdir.blob_account)
    bootstrap.write_cluster_files(plan, cdir, head=head)
    if head:
        adopt_admin_home(template.azure.admin_user, cdir.homes)
    if head:  # the head's API and reconciler find their cluster in the head's own store
        store = Store(home() / "state.db")
        if store.cluster(template.name) is None:
            store.put_cluster(template.name, "azure", "running", config["template"],
                              template.network.cidr)
    bootstrap.ensure_mount_points()
    node = _this_node(plan, config["role"], node_name or socket.gethostname(), cdir,
                      config.get("nodeset"))
    return bootstrap.write_node_spec(node, cdir)


def ack_at_once(runner: Runner) -> None:
    """This VM's own addresses' routes ACK at once: slurmctld and slurmdbd on the head talk
    over them, and Slurm's length-then-body messages otherwise wait 40 ms for a delayed ACK
    each way (cloudhpc.providers.local.network). Done at every boot (routes are the
    kernel's, made again with the addresses); a failure only costs that time."""
    shown = runner.run(["ip", "-4", "-o", "route", "show", "table", "local", "type", "local"],
                       check=False).stdout
    routes = [line.strip() for line in shown.splitlines()
              if line.startswith("local ") and "quickack" not in line]
    if routes:
        runner.run(["ip", "-batch", "-"], check=False, input="".join(
            f"route replace {route} table local quickack 1\n" for route in routes))


def main(argv: list[str]) -> int:
    try:
        spec = prepare(Path(argv[0]), argv[1] if len(argv) > 1 else None)
    except CloudHPCError as exc:
        print(f"cloudhpc bootstrap: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""),
              file=sys.stderr)
        return 1
    ack_at_once(Runner())
    Runner().replace(bootstrap.supervisor_argv(spec), dict(os.environ))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
