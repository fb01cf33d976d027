"""cloud-init custom data for Azure VMs. The VM boots cloudhpc's node image (everything
installed: scale-set VMs have no way out to the internet, and nothing is fetched at boot), so
the custom data only writes the cluster's description and secrets, shares /shared and the
users' homes over NFS (the head exports its directories to the cluster's subnet; the other VMs
mount them at the same paths through /etc/fstab, so a job's directory, its output and its
user's home are on every node, as locally)
and enables the `cloudhpc-node` systemd unit, which runs the same node bootstrap the local
provider runs — at every boot: a rebooted VM rejoins its cluster."""

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
# not a secret, but known only to the deployment (a uniqueString): the head's blob store
STORAGE_ACCOUNT = "@@STORAGE_ACCOUNT@@"
CONFIG_PATH = "/etc/cloudhpc/cluster.json"
EXPORTS_PATH = "/etc/exports.d/cloudhpc.exports"


def shared_dir(t: Template) -> str:
    """The cluster's /shared on a VM (cloud-init runs without CLOUDHPC_HOME)."""
    return str(ClusterDir.of(t.name, Path(DEFAULT_HOME)).shared)


def homes_dir(t: Template) -> str:
    """The cluster's homes on a VM (bound at /home by the node's supervisor)."""
    return str(ClusterDir.of(t.name, Path(DEFAULT_HOME)).homes)


def exported(t: Template) -> list[str]:
    """What the head shares with every other VM: /shared and the users' homes."""
    return [shared_dir(t), homes_dir(t)]


UNIT_PATH = "/etc/systemd/system/cloudhpc-node.service"
PYTHON = "/opt/cloudhpc/bin/python"  # the node image's cloudhpc (image/provision.sh)


def unit(t: Template, role: str) -> str:
    """The node's systemd unit: the bootstrap and its supervisor, restarted if it dies, at
    every boot. A compute VM first waits for /shared (its fstab line): at the first boot and
    after a reboot the head may not serve it yet, and systemd does not retry a failed mount."""
    wait = ""
    if role != "head":
        wait = "".join(f"ExecStartPre=/bin/sh -c 'until mountpoint -q {d} || mount {d}; "
                       "do sleep 3; done'\n" for d in exported(t)) + "TimeoutStartSec=infinity\n"
    return ("[Unit]\nDescription=cloudhpc node: this VM's Slurm daemons\n"
            "Wants=network-online.target\nAfter=network-online.target remote-fs.target\n"
            "StartLimitIntervalSec=0\n\n"
            f"[Service]\n{wait}"
            f"ExecStart={PYTHON} -m cloudhpc.node.cloudinit {CONFIG_PATH}\n"
            "Restart=always\nRestartSec=5\nKillMode=mixed\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def _nfs(t: Template, role: str) -> tuple[list[dict[str, str]], list[list[str]]]:
    """(files, commands) that share the head's /shared and homes with the other VMs."""
    dirs = exported(t)
    if role == "head":
        # root on a compute VM is nobody here (root_squash): nothing of cloudhpc's writes
        # /shared as root from a compute VM, and a VM's root must not own the cluster's files
        export = "".join(f"{d} {t.network.cidr}(rw,sync,no_subtree_check,root_squash)\n"
                         for d in dirs)
        return ([{"path": EXPORTS_PATH, "permissions": "0644", "content": export}],
                [["mkdir", "-p", *dirs], ["systemctl", "enable", "--now", "nfs-server"],
                 ["exportfs", "-ra"]])
    # in fstab, mounted at every boot; the head may not serve them yet: the unit waits
    commands: list[list[str]] = [["mkdir", "-p", *dirs]]
    for d in dirs:
        line = f"{head_address(t)}:{d} {d} nfs vers=4.2,hard,_netdev,nofail 0 0"
        commands.append(["sh", "-c", f"grep -qs ' {d} ' /etc/fstab || echo '{line}' >> /etc/fstab"])
    return ([], [*commands, ["systemctl", "daemon-reload"]])


def cluster_config(t: Template, role: str, nodeset: str | None) -> dict[str, object]:
    """What a VM needs to bootstrap itself: the template, its role and node set."""
    config: dict[str, object] = {"template": t.model_dump(mode="json"), "role": role,
                                 "nodeset": nodeset, "provider": "azure"}
    if role == "head" and t.storage.blob.enabled:
        # the deployment's account, reached with the head's managed identity (no key)
        config["storage_account"] = STORAGE_ACCOUNT
    return config


def user_data(t: Template, role: str, nodeset: str | None = None) -> str:
    config = json.dumps(cluster_config(t, role, nodeset), sort_keys=True)
    nfs_files, nfs_commands = _nfs(t, role)
    doc = {
        "write_files": [
            {"path": CONFIG_PATH, "permissions": "0600", "content": config},
            {"path": "/etc/cloudhpc/munge.key.b64", "permissions": "0400",
             "content": MUNGE_KEY},
            *([{"path": "/etc/cloudhpc/control.token", "permissions": "0600",
                "content": CLUSTER_TOKEN}] if role == "head" else []),
            {"path": UNIT_PATH, "permissions": "0644", "content": unit(t, role)},
            *nfs_files,
        ],
        "runcmd": [
            *nfs_commands,
            # --no-block: cloud-final finishes; the unit runs on (and at every boot)
            ["systemctl", "enable", "--now", "--no-block", "cloudhpc-node.service"],
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1000)
