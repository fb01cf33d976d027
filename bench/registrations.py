"""Registrations of powered-up nodes that slurmctld did not take.

Powers 4 dynamic nodes up (a 4-node job) and down again CYCLES times, with slurmctld
logging at debug level, and counts the registrations it dropped ("Still waiting for boot",
see cloudhpc.autoscale.decide.REJOIN_AFTER) and the reconciler's rejoins. Target: none
dropped; every job completed. Prints JSON.

    python registrations.py [CYCLES]
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

from common import bench_home, cluster

from cloudhpc.cluster import Cluster
from cloudhpc.jobs.model import JobState

TEMPLATE = {"version": 1, "name": "b-reg", "network": {"cidr": "198.19.30.0/24"},
            "compute": [{"name": "reg", "size": "Standard_D2s_v5", "min": 0, "max": 4,
                         "idle_timeout": 5, "resume_timeout": 60}]}
DROPPED = re.compile(r"^\[([^\]]+)\] debug:  Still waiting for boot of node (\S+)", re.M)


def powered_down(c: Cluster) -> bool:
    return {n.state for n in c.status() if n.name.startswith("reg-")} == {"powered_down"}


def cycle(c: Cluster, script: Path) -> None:
    job = c.submit(script, nodes=4, partition="reg", wait=True, timeout=120)
    if job.state is not JobState.COMPLETED:
        raise SystemExit(f"job {job.job_id} ended {job.state.value}: {job.reason}")
    deadline = time.monotonic() + 120
    while not powered_down(c):
        if time.monotonic() > deadline:
            raise SystemExit("nodes were not powered down in 120 s")
        time.sleep(0.3)


def main(cycles: int) -> dict[str, object]:
    with bench_home(), cluster(TEMPLATE) as c, tempfile.TemporaryDirectory() as tmp:
        c.exec("head", ["scontrol", "setdebug", "debug"], check=True)
        script = Path(tmp) / "true.sh"
        script.write_text("#!/bin/sh\ntrue\n")
        start = time.time()
        for _ in range(cycles):
            cycle(c, script)
        log = (c.dir.logs / "slurmctld.log").read_text(errors="replace")
        # each dropped registration is logged twice (jobs and node checks)
        dropped = sorted(set(DROPPED.findall(log)))
        registered = len(re.findall(r"Node reg-\d+ now responding", log))
        rejoined = [e["node"] for e in c.events.read(start, {"node_rejoined"})]
        return {"benchmark": "registrations", "cycles": cycles, "node_starts": cycles * 4,
                "registrations_taken": registered,
                "registrations_dropped": [f"{node} at {at}" for at, node in dropped],
                "rejoined": rejoined, "seconds": round(time.time() - start, 1),
                "target_dropped": 0, "meets_target": not dropped}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30), indent=2))
