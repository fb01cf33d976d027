"""Burst: one job needing 32 dynamic nodes on a node set at zero; seconds from submit until
the job script starts on all of them (target <= 10 s). Prints JSON."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from common import bench_home

from cloudhpc.cluster import Cluster
from cloudhpc.jobs.model import JobState

NODES = 32
TEMPLATE = {"version": 1, "name": "b-burst", "network": {"cidr": "198.19.25.0/24"},
            "compute": [{"name": "wide", "size": "Standard_D2s_v5", "min": 0, "max": NODES,
                         "idle_timeout": 30}]}


def main() -> None:
    with bench_home(), tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "wide.sh"
        script.write_text("#!/bin/sh\ndate +%s.%N\nsrun -l hostname | sort | wc -l\n")
        c = Cluster.up(TEMPLATE)
        try:
            submitted = time.time()
            job = c.submit(script, nodes=NODES, wait=True, timeout=180)
            out = c.logs(job.job_id).split()
            if job.state is not JobState.COMPLETED:
                raise SystemExit(f"job failed: {out}")
            launched = [e for e in c.events.read(submitted, {"node_launched"})]
            requested = c.events.read(submitted, {"node_requested"})
        finally:
            c.down()
    started = float(out[0])
    print(json.dumps({
        "benchmark": "burst", "nodes": NODES, "tasks_ran": int(out[1]),
        "submit_to_start_s": round(started - submitted, 3), "target_s": 10.0,
        "resume_calls": len(requested),
        "first_request_after_submit_s": round(requested[0]["time"] - submitted, 3),
        "all_launched_after_submit_s": round(max(e["time"] for e in launched) - submitted, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
