"""cloud-init custom data for Azure VMs: install the packages and cloudhpc, write the
cluster's description, share /shared over NFS (the head exports its directory to the
cluster's subnet, compute VMs mount it at the same path before they bootstrap: a job's
directory and its output are on every node, as locally), then run the same node bootstrap
the local provider runs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from cloudhpc.paths import DEFAULT_HOME, ClusterDir
from cloudhpc.plan import head_address
from cloudhpc.template.schema import Template

# Placeholders replaced by ARM with secure parameters when the VM is created; the text
# never holds a secret.
MUNGE_KEY = "@@MUNGE_KEY@@"
CLUSTER_TOKEN = "@@CLUSTER_TOKEN@@"
PACKAGES = {
    "head": ["slurmctld", "slurm-client", "munge", "openmpi-bin", "python3-venv",
             "nfs-kernel-server", "slurmdbd", "mariadb-server"],
    "compute": ["slurmd", "slurm-client", "munge", "openmpi-bin", "libopenmpi-dev",
                "python3-venv", "nfs-common"],
}
CONFIG_PATH = "/etc/cloudhpc/cluster.json"
EXPORTS_PATH = "/etc/exports.d/cloudhpc.exports"


def shared_dir(t: Template) -> str:
    """The cluster's /shared on a VM (cloud-init runs without CLOUDHPC_HOME)."""
    return str(ClusterDir.of(t.name, Path(DEFAULT_HOME)).shared)


def _nfs(t: Template, role: str) -> tuple[list[dict[str, str]], list[list[str]]]:
    """(files, commands) that share the head's /shared with the compute VMs."""
    shared = shared_dir(t)
    if role == "head":
        # root on a compute VM is nobody here (root_squash): nothing of cloudhpc's writes
        # /shared as root from a compute VM, and a VM's root must not own the cluster's files
        export = f"{shared} {t.network.cidr}(rw,sync,no_subtree_check,root_squash)\n"
        return ([{"path": EXPORTS_PATH, "permissions": "0644", "content": export}],
                [["mkdir", "-p", shared], ["exportfs", "-ra"]])
    head = head_address(t)
    mount = (f"until mount -t nfs -o vers=4.2,hard {head}:{shared} {shared}; "
             "do sleep 5; done")  # the head may still be installing its packages
    return [], [["mkdir", "-p", shared], ["sh", "-c", mount]]


def cluster_config(t: Template, role: str, nodeset: str | None) -> dict[str, object]:
    """What a VM needs to bootstrap itself: the template, its role and node set."""
    return {"template": t.model_dump(mode="json"), "role": role, "nodeset": nodeset,
            "provider": "azure"}


def user_data(t: Template, role: str, nodeset: str | None = None) -> str:
    config = json.dumps(cluster_config(t, role, nodeset), sort_keys=True)
    nfs_files, nfs_commands = _nfs(t, role)
    doc = {
        "package_update": True,
        "packages": PACKAGES["head" if role == "head" else "compute"],
        "write_files": [
            {"path": CONFIG_PATH, "permissions": "0600", "content": config},
            {"path": "/etc/cloudhpc/munge.key.b64", "permissions": "0400",
             "content": MUNGE_KEY},
            *([{"path": "/etc/cloudhpc/control.token", "permissions": "0600",
                "content": CLUSTER_TOKEN}] if role == "head" else []),
            *nfs_files,
        ],
        "runcmd": [
            *nfs_commands,
            ["python3", "-m", "venv", "/opt/cloudhpc"],
            ["/opt/cloudhpc/bin/pip", "install", "--quiet", t.azure.package],
            ["/opt/cloudhpc/bin/python", "-m", "cloudhpc.node.cloudinit", CONFIG_PATH],
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1000)
