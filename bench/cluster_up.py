"""Seconds from `up` to all static nodes idle in Slurm, for 4 and 32 compute nodes.

Targets: <= 2 s for 4 nodes, <= 10 s for 32. Prints JSON."""

from __future__ import annotations

import json
import sys
import time

from common import bench_home, template

from cloudhpc.cluster import Cluster


def measure(nodes: int, cidr: str) -> dict[str, float | int]:
    steps: dict[str, float] = {}
    start = time.perf_counter()

    def progress(step: str, done: int, total: int) -> None:
        steps[step] = round(time.perf_counter() - start, 3)

    c = Cluster.up(template(f"b-up{nodes}", cidr, nodes), progress=progress)
    elapsed = time.perf_counter() - start
    idle = sum(1 for n in c.status() if n.role == "compute" and n.state == "idle")
    t0 = time.perf_counter()
    c.down()
    return {"compute_nodes": nodes, "idle": idle, "up_to_all_idle_s": round(elapsed, 3),
            "step_started_at_s": steps, "down_s": round(time.perf_counter() - t0, 3)}


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results = []
    with bench_home():
        for nodes, cidr, target in ((4, "198.19.20.0/24", 2.0), (32, "198.19.21.0/24", 10.0)):
            samples = [measure(nodes, cidr) for _ in range(runs)]
            times = sorted(s["up_to_all_idle_s"] for s in samples)  # type: ignore[type-var]
            mid = times[len(times) // 2]
            results.append({"compute_nodes": nodes, "runs": runs, "median_s": mid,
                            "min_s": times[0], "max_s": times[-1], "target_s": target,
                            "meets_target": mid <= target,
                            "samples": samples})
    print(json.dumps({"benchmark": "cluster_up", "results": results}, indent=2))


if __name__ == "__main__":
    main()
