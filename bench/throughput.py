"""Trivial batch jobs completed per second on 4 nodes of 16 vCPUs (64 job slots), through raw
`sbatch` (one process per job, on the head node) and through cloudhpc's submit path (the
Python API `Cluster.submit`, the same code as `cloudhpc submit` minus CLI start-up), with
`--variant` to try Slurm scheduler settings. Target: >= 0.8 x slots per second; cloudhpc's
path >= 0.9 x raw sbatch. Prints JSON."""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import bench_home, cluster, template

from cloudhpc.cluster import NODE_ENV, Cluster
from cloudhpc.slurm.conf import SlurmPaths

VARIANTS = {
    "cloudhpc": "",  # slurm.conf exactly as cloudhpc renders it
    "slurm_defaults": "SchedulerParameters=",
    "queue_depth": "SchedulerParameters=sched_min_interval=0,batch_sched_delay=0,"
                   "default_queue_depth=1000",
}


def completed(c: Cluster, first_id: int) -> int:
    path = Path(SlurmPaths(str(c.dir.root)).jobcomp)
    if not path.exists():
        return 0
    count = 0
    for line in path.read_text().splitlines():
        jid = line.split(" ", 1)[0].removeprefix("JobId=")
        if jid.isdigit() and int(jid) >= first_id:
            count += 1
    return count


def run_phase(c: Cluster, jobs: int, submit_one: object, first_id: int) -> dict[str, float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(submit_one, range(jobs)))  # type: ignore[arg-type]
    submitted = time.perf_counter() - start
    while completed(c, first_id) < jobs:
        if time.perf_counter() - start > 300:
            raise SystemExit("jobs did not complete in 300 s")
        time.sleep(0.05)
    total = time.perf_counter() - start
    return {"jobs": jobs, "submit_s": round(submitted, 3),
            "submit_per_s": round(jobs / submitted, 1), "total_s": round(total, 3),
            "completed_per_s": round(jobs / total, 1)}


def apply_variant(c: Cluster, name: str) -> None:
    text = c.dir.slurm_conf.read_text()
    key = VARIANTS[name].split("=", 1)[0]
    lines = [ln for ln in text.splitlines() if not ln.startswith(key + "=")]
    c.dir.slurm_conf.write_text("\n".join(lines) + "\n" + VARIANTS[name] + "\n")
    c.exec_head(["scontrol", "reconfigure"])
    time.sleep(1)


def one_run(jobs: int, variant: str, accounting: bool = True,
            ) -> tuple[int, dict[str, float], dict[str, float]]:
    spec = {**template("b-tput", "198.19.23.0/24", 4), "accounting": {"enabled": accounting}}
    with bench_home(), cluster(spec) as c, \
            tempfile.TemporaryDirectory() as tmp:
        if VARIANTS[variant]:
            apply_variant(c, variant)
        slots = sum(n.cpus for n in c.plan.compute())
        head = c.node_argv("head", ["sbatch", "--wrap=true", "--output=/dev/null"])

        def raw(_: int) -> None:
            subprocess.run(head, env=NODE_ENV, check=True, capture_output=True)

        raw_result = run_phase(c, jobs, raw, 1)
        script = Path(tmp) / "true.sh"
        script.write_text("#!/bin/sh\ntrue\n")

        def api(_: int) -> None:
            c.submit(script)

        return slots, raw_result, run_phase(c, jobs, api, jobs + 1)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="cloudhpc")
    parser.add_argument("--no-accounting", action="store_true",
                        help="a cluster without slurmdbd (what accounting costs)")
    args = parser.parse_args()
    runs = [one_run(args.jobs, args.variant, not args.no_accounting)
            for _ in range(args.repeat)]
    slots = runs[0][0]
    raw = median([r[1]["completed_per_s"] for r in runs])
    api = median([r[2]["completed_per_s"] for r in runs])
    print(json.dumps({
        "benchmark": "throughput", "variant": args.variant, "nodes": 4, "job_slots": slots,
        "accounting": not args.no_accounting,
        "jobs_per_run": args.jobs, "runs": args.repeat,
        "raw_sbatch_completed_per_s_median": raw, "cloudhpc_completed_per_s_median": api,
        "cloudhpc_vs_raw": round(api / raw, 3), "target_jobs_per_s": round(0.8 * slots, 1),
        "meets_target": raw >= 0.8 * slots and api >= 0.9 * raw,
        "samples": [{"raw_sbatch": r[1], "cloudhpc_submit": r[2]} for r in runs],
    }, indent=2))


if __name__ == "__main__":
    main()
