"""Node bootstrap by role: the files a cluster's nodes share and each node's supervisor spec.

The same spec drives a local namespace node (the local provider starts the supervisor in the
node's namespaces) and, later, an Azure VM (cloud-init runs the same supervisor)."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from cloudhpc.paths import ClusterDir
from cloudhpc.plan import NodeSpec, Plan, Role
from cloudhpc.runner import BASE_PATH
from cloudhpc.slurm.conf import OMPI_MCA_PARAMS, TASK_PROLOG, SlurmPaths, render

MUNGE_SOCKET = "/run/munge/munge.socket.2"
# Paths every node sees, bound from the cluster's state directory. The host must have the
# mount points; they are created empty if missing (nothing is mounted on the host itself).
NODE_MOUNT_POINTS = ["/shared", "/scratch", "/run/munge", "/etc/slurm"]
MCA_PARAMS_FILE = "/etc/openmpi/openmpi-mca-params.conf"


def hosts_file(plan: Plan) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{plan.gateway}\tcloudhpc-host"]
    lines += [f"{n.address}\t{n.name}" for n in plan.nodes]
    return "\n".join(lines) + "\n"


def write_cluster_files(plan: Plan, cdir: ClusterDir) -> None:
    """Write everything nodes share: slurm.conf, munge key, hosts, MPI defaults."""
    for d in (cdir.root, cdir.etc, cdir.slurm_etc, cdir.shared / "jobs", cdir.logs,
              cdir.root / "slurm" / "ctld", cdir.root / "slurm" / "spool", cdir.root / "nodes"):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(cdir.root, 0o700)
    os.chmod(cdir.shared, 0o755)
    os.chmod(cdir.shared / "jobs", 0o1777)
    paths = SlurmPaths(str(cdir.root))
    cdir.slurm_conf.write_text(render(plan, paths))
    prolog = Path(paths.task_prolog)
    prolog.write_text(TASK_PROLOG)
    prolog.chmod(0o755)
    (cdir.etc / "hosts").write_text(hosts_file(plan))
    (cdir.etc / "openmpi-mca-params.conf").write_text(OMPI_MCA_PARAMS)
    if not cdir.munge_key.exists():
        fd = os.open(cdir.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(1024))
    os.chmod(cdir.munge_key, 0o400)


def ensure_mount_points() -> None:
    for p in NODE_MOUNT_POINTS:
        Path(p).mkdir(parents=True, exist_ok=True)


def daemons(node: NodeSpec, cdir: ClusterDir) -> list[dict[str, Any]]:
    ndir = cdir.node(node.name)
    munged = {
        "name": "munged",
        "argv": ["munged", "-F", f"--key-file={cdir.munge_key}", f"--socket={MUNGE_SOCKET}",
                 "--pid-file=/run/munge/munged.pid", "--seed-file=/run/munge/munged.seed",
                 f"--log-file={ndir}/logs/munged-file.log", "--num-threads=4"],
        "wait_for": MUNGE_SOCKET,
    }
    if node.role is Role.HEAD:
        return [munged, {"name": "slurmctld", "argv": ["slurmctld", "-D", "-i"]}]
    if node.role is Role.COMPUTE:
        argv = ["slurmd", "-D", "-N", node.name] + (["-b"] if node.dynamic else [])
        return [munged, {"name": "slurmd", "argv": argv}]
    return [munged]


def node_spec(node: NodeSpec, cdir: ClusterDir) -> dict[str, Any]:
    ndir = cdir.node(node.name)
    for sub in ("munge", "scratch", "run", "logs"):
        (ndir / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(ndir / "munge", 0o755)
    (cdir.root / "slurm" / "spool" / node.name).mkdir(parents=True, exist_ok=True)
    return {
        "name": node.name,
        "role": node.role.value,
        "hostname": node.name,
        "dir": str(ndir),
        "binds": [
            [str(cdir.etc / "hosts"), "/etc/hosts"],
            [str(cdir.slurm_etc), "/etc/slurm"],
            [str(cdir.etc / "openmpi-mca-params.conf"), MCA_PARAMS_FILE],
            [str(ndir / "munge"), "/run/munge"],
            [str(cdir.shared), "/shared"],
            [str(ndir / "scratch"), "/scratch"],
        ],
        "env": {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": "/root"},
        "daemons": daemons(node, cdir),
    }


def write_node_spec(node: NodeSpec, cdir: ClusterDir) -> Path:
    path = cdir.node(node.name) / "node.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(node_spec(node, cdir), indent=1))
    return path


def supervisor_argv(spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "cloudhpc.node.supervisor", str(spec_path)]
