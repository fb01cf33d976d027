"""Seconds per call of Slurm's own clients on the head of a 2-node cluster with accounting:
`sacctmgr list cluster` and `sacct` (slurmdbd), `squeue` and `scontrol ping` (slurmctld).
Each call opens its connections anew; a message held for a delayed ACK shows as ~40 ms
(see cloudhpc.providers.local.network). Prints JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from common import bench_home, cluster, template

from cloudhpc.cluster import NODE_ENV

CLIENTS = {"sacctmgr": ["sacctmgr", "-n", "list", "cluster"],
           "sacct": ["sacct", "-n", "-a", "-X"],
           "squeue": ["squeue", "-h"],
           "scontrol_ping": ["scontrol", "ping"]}


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    out: dict[str, float] = {}
    with bench_home(), cluster(template("b-rpc", "198.19.42.0/24", 2)) as c:
        for name, argv in CLIENTS.items():
            head = c.node_argv("head", argv)
            subprocess.run(head, env=NODE_ENV, check=True, capture_output=True)  # warm
            start = time.perf_counter()
            for _ in range(calls):
                subprocess.run(head, env=NODE_ENV, check=True, capture_output=True)
            out[name] = round((time.perf_counter() - start) / calls, 4)
    print(json.dumps({"benchmark": "slurm_rpc", "calls": calls, "seconds_per_call": out}))


if __name__ == "__main__":
    main()
