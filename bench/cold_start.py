"""Cold start and scale-down: a 2-node job on a node set at zero nodes.

Reports seconds from submit to the job script starting (target <= 3 s), and how long after
idle_timeout the nodes were removed (the scale-down lag, target <= 10 s). Prints JSON."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from common import bench_home

from cloudhpc.cluster import Cluster
from cloudhpc.jobs.model import JobState

IDLE = 5
TEMPLATE = {"version": 1, "name": "b-cold", "network": {"cidr": "198.19.24.0/24"},
            "compute": [{"name": "cold", "size": "Standard_D4s_v5", "min": 0, "max": 4,
                         "idle_timeout": IDLE}]}


def absent(c: Cluster) -> bool:
    return all(i.state.value == "absent" for n, i in c.backend.nodes().items()
               if n.startswith("cold-"))


def one(c: Cluster, script: Path) -> dict[str, float]:
    submitted = time.time()
    job = c.submit(script, nodes=2, wait=True, timeout=120)
    if job.state is not JobState.COMPLETED:
        raise SystemExit(f"job failed: {c.logs(job.job_id)}")
    started = float(c.logs(job.job_id).split()[0])
    ended = time.time()
    while not absent(c):
        if time.time() - ended > 120:
            raise SystemExit("nodes were not removed in 120 s")
        time.sleep(0.1)
    removed = time.time()
    return {"submit_to_start_s": round(started - submitted, 3),
            "removed_after_idle_s": round(removed - ended, 2),
            "scale_down_lag_s": round(removed - ended - IDLE, 2)}


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with bench_home(), tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "start.sh"
        script.write_text("#!/bin/sh\ndate +%s.%N\n")
        c = Cluster.up(TEMPLATE)
        try:
            samples = [one(c, script) for _ in range(runs)]
        finally:
            c.down()
    starts = sorted(s["submit_to_start_s"] for s in samples)
    lags = sorted(s["scale_down_lag_s"] for s in samples)
    print(json.dumps({
        "benchmark": "cold_start", "nodes": 2, "idle_timeout_s": IDLE, "runs": runs,
        "submit_to_start_median_s": starts[len(starts) // 2], "target_s": 3.0,
        "scale_down_lag_median_s": lags[len(lags) // 2], "scale_down_target_s": 10.0,
        "samples": samples}, indent=2))


if __name__ == "__main__":
    main()
