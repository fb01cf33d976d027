"""cloud-init custom data for Azure VMs: install the packages and cloudhpc, write the
cluster's description, then run the same node bootstrap the local provider runs."""

from __future__ import annotations

import json

import yaml

from cloudhpc.template.schema import Template

# Placeholders replaced by ARM with secure parameters when the VM is created; the text
# never holds a secret.
MUNGE_KEY = "@@MUNGE_KEY@@"
CLUSTER_TOKEN = "@@CLUSTER_TOKEN@@"
PACKAGES = {
    "head": ["slurmctld", "slurm-client", "munge", "openmpi-bin", "python3-venv",
             "nfs-kernel-server"],
    "compute": ["slurmd", "slurm-client", "munge", "openmpi-bin", "libopenmpi-dev",
                "python3-venv", "nfs-common"],
}
CONFIG_PATH = "/etc/cloudhpc/cluster.json"


def cluster_config(t: Template, role: str, nodeset: str | None) -> dict[str, object]:
    """What a VM needs to bootstrap itself: the template, its role and node set."""
    return {"template": t.model_dump(mode="json"), "role": role, "nodeset": nodeset,
            "provider": "azure"}


def user_data(t: Template, role: str, nodeset: str | None = None) -> str:
    config = json.dumps(cluster_config(t, role, nodeset), sort_keys=True)
    doc = {
        "package_update": True,
        "packages": PACKAGES["head" if role == "head" else "compute"],
        "write_files": [
            {"path": CONFIG_PATH, "permissions": "0600", "content": config},
            {"path": "/etc/cloudhpc/munge.key.b64", "permissions": "0400",
             "content": MUNGE_KEY},
            {"path": "/etc/cloudhpc/control.token", "permissions": "0600",
             "content": CLUSTER_TOKEN},
        ],
        "runcmd": [
            ["python3", "-m", "venv", "/opt/cloudhpc"],
            ["/opt/cloudhpc/bin/pip", "install", "--quiet", t.azure.package],
            ["/opt/cloudhpc/bin/python", "-m", "cloudhpc.node.cloudinit", CONFIG_PATH],
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1000)
