"""Removing what a local cluster left without a record (`cloudhpc down NAME` when the state
store no longer knows NAME)."""

from __future__ import annotations

import shutil

from cloudhpc.paths import ClusterDir
from cloudhpc.plan import short_id
from cloudhpc.providers.local import processes
from cloudhpc.providers.local.network import NETNS_DIR
from cloudhpc.runner import Runner


def remove_leftovers(name: str, cdir: ClusterDir, others: list[str],
                     runner: Runner | None = None) -> list[str]:
    """Whatever a cluster NAME left without a record (a second Ctrl-C during `up` once
    removed the record first): its nodes' namespaces and processes, its links, its state
    directory. Returns what was removed."""
    removed: list[str] = []
    sid = short_id(name)
    spaces = sorted(p.name for p in NETNS_DIR.glob("*")) if NETNS_DIR.exists() else []
    # NAME-node, but not a node of another cluster whose name begins with NAME-
    mine = [ns for ns in spaces if ns.startswith(f"{name}-")
            and not any(ns.startswith(f"{o}-") for o in others if o.startswith(f"{name}-"))]
    processes.stop_namespaces(mine)
    run = runner or Runner()
    for ns in mine:
        run.run(["ip", "netns", "delete", ns], check=False)
        removed.append(f"namespace {ns}")
    for pid in processes.pids_mentioning(str(cdir.root) + "/"):
        processes.stop_pid(pid, grace=2.0)
        removed.append(f"process {pid}")
    links = run.run(["ip", "-o", "link", "show"], check=False).stdout
    for row in links.splitlines():
        parts = row.split(":")
        link = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        if link.startswith((f"chb{sid}", f"chv{sid}")):
            run.run(["ip", "link", "delete", link], check=False)
            removed.append(f"link {link}")
    if cdir.root.exists():
        shutil.rmtree(cdir.root, ignore_errors=True)
        removed.append(f"directory {cdir.root}")
    return removed
