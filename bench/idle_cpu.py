"""CPU used by cloudhpc's own processes (node supervisors, reconciler, control plane) on an
idle 8-node cluster over 60 s, as a share of one core (target < 2 %). Slurm's and munge's
daemons are reported apart. Prints JSON."""

from __future__ import annotations

import json
import os
import sys
import time

from common import bench_home, cluster, template

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return 0.0


def processes() -> dict[int, str]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "b-idle" in cmd or "cloudhpc" in cmd or cmd.startswith(("slurm", "munged")):
                out[int(entry)] = cmd
    return out


def kind(cmd: str) -> str:
    if "azurite" in cmd:
        return "azurite (storage node)"
    if "cloudhpc" in cmd:
        return "cloudhpc"
    return cmd.split()[0].rsplit("/", 1)[-1]


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    with bench_home(), cluster(template("b-idle", "198.19.26.0/24", 8,
                                        size="Standard_D4s_v5")):
        time.sleep(5)  # let start-up settle
        procs = {p: c for p, c in processes().items() if p != os.getpid()}
        before = {p: cpu_seconds(p) for p in procs}
        time.sleep(seconds)
        used: dict[str, float] = {}
        for pid, cmd in procs.items():
            used[kind(cmd)] = used.get(kind(cmd), 0.0) + cpu_seconds(pid) - before[pid]
    share = {k: round(100 * v / seconds, 3) for k, v in sorted(used.items())}
    print(json.dumps({"benchmark": "idle_cpu", "nodes": 8, "seconds": seconds,
                      "percent_of_one_core": share,
                      "cloudhpc_percent": share.get("cloudhpc", 0.0), "target_percent": 2.0},
                     indent=2))


if __name__ == "__main__":
    main()
