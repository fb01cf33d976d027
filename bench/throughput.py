"""Trivial batch jobs completed per second on 4 nodes of 16 vCPUs (64 job slots), through raw
`sbatch` (one process per job, started by `xargs -P 4` on the head node, as from a user's
shell there) and through cloudhpc's submit path (the Python API `Cluster.submit`, the same
code as `cloudhpc submit` minus CLI start-up, from 4 threads), with `--variant` to try Slurm
scheduler settings. Target: >= 0.8 x slots per second; cloudhpc's path >= 0.9 x raw sbatch.
Prints JSON."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
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
    # what each per-job addition costs: cloudhpc's two prologs (blob tokens and node waits
    # on the head, Open MPI's environment in each task), Slurm's job resource gathering
    # (sstat, MaxRSS, the memory limit)
    "no_prologs": "PrologSlurmctld=\nTaskProlog=",
    "no_gathering": "JobAcctGatherType=jobacct_gather/none\nJobAcctGatherParams=",
    # Slurm without all of them: with --no-accounting, what Slurm alone costs here
    "slurm_floor": "PrologSlurmctld=\nTaskProlog=\nJobAcctGatherType=jobacct_gather/none\n"
                   "JobAcctGatherParams=",
}


class Completed:
    """Jobs with an id >= FIRST in slurmctld's job completion log, read incrementally (the
    benchmark's own polling must not cost more as the log grows)."""

    def __init__(self, c: Cluster, first_id: int) -> None:
        self.path = Path(SlurmPaths(str(c.dir.root)).jobcomp)
        self.first, self.offset, self.count = first_id, 0, 0

    def __call__(self) -> int:
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            jid = line.split(b" ", 1)[0].removeprefix(b"JobId=")
            if jid.isdigit() and int(jid) >= self.first:
                self.count += 1
        return self.count


def machine_cpu() -> tuple[int, int]:
    """Jiffies this machine's CPUs spent working (user, nice, system, irq, softirq) and
    stolen by the hypervisor, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[0] + fields[1] + fields[2] + fields[5] + fields[6], fields[7]


def run_phase(c: Cluster, jobs: int, submit: Callable[[int], None],
              first_id: int) -> dict[str, float]:
    """SUBMIT(JOBS) submits them; seconds until all completed. Beside the rates, the whole
    machine's CPU time per job (steadier than rates on a noisy VM: a change that saves CPU
    shows there first) and the share of time the hypervisor took away."""
    completed = Completed(c, first_id)
    cpu0, steal0 = machine_cpu()
    start = time.perf_counter()
    submit(jobs)
    submitted = time.perf_counter() - start
    while completed() < jobs:
        if time.perf_counter() - start > 300:
            raise SystemExit("jobs did not complete in 300 s")
        time.sleep(0.05)
    total = time.perf_counter() - start
    cpu1, steal1 = machine_cpu()
    hz = os.sysconf("SC_CLK_TCK")
    return {"jobs": jobs, "submit_s": round(submitted, 3),
            "submit_per_s": round(jobs / submitted, 1), "total_s": round(total, 3),
            "completed_per_s": round(jobs / total, 1),
            "cpu_ms_per_job": round((cpu1 - cpu0) * 1000 / hz / jobs, 1),
            "stolen_share": round((steal1 - steal0) / hz / (total * (os.cpu_count() or 1)), 3)}


def apply_variant(c: Cluster, name: str) -> None:
    """Each KEY=VALUE line of the variant replaces KEY's line in slurm.conf (KEY= removes it)."""
    settings = [ln.split("=", 1) for ln in VARIANTS[name].splitlines()]
    keys = {key + "=" for key, _ in settings}
    lines = [ln for ln in c.dir.slurm_conf.read_text().splitlines()
             if not any(ln.startswith(k) for k in keys)]
    lines += [f"{key}={value}" for key, value in settings if value]
    c.dir.slurm_conf.write_text("\n".join(lines) + "\n")
    c.exec_head(["scontrol", "reconfigure"])
    time.sleep(1)


def run(jobs: int, repeat: int, variant: str, accounting: bool = True,
        ) -> tuple[int, list[tuple[dict[str, float], dict[str, float]]]]:
    """One cluster; REPEAT pairs of phases (raw sbatch, then cloudhpc's path) on it, so both
    paths meet the same machine and file system state. (A cluster made right after another
    was removed meets tens of thousands of just-deleted inodes: on a journal-less ext4 such
    as this machine's, every new file is checked against them for ~30 s.)"""
    spec = {**template("b-tput", "198.19.23.0/24", 4), "accounting": {"enabled": accounting}}
    with bench_home(), cluster(spec) as c, \
            tempfile.TemporaryDirectory() as tmp:
        if VARIANTS[variant]:
            apply_variant(c, variant)
        slots = sum(n.cpus for n in c.plan.compute())
        def raw(jobs: int) -> None:
            # one process enters the head node; sbatch is started there as a user's shell
            # would (entering the node per job cost ~2.7 ms of CPU per job, not Slurm's)
            loop = (f"seq {jobs} | xargs -P 4 -I @ sbatch --wrap=true --output=/dev/null "
                    "--job-name=t@ >/dev/null")
            subprocess.run(c.node_argv("head", ["sh", "-c", loop]), env=NODE_ENV,
                           check=True, capture_output=True)

        script = Path(tmp) / "true.sh"
        script.write_text("#!/bin/sh\ntrue\n")

        def api(jobs: int) -> None:
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda _: c.submit(script), range(jobs)))

        run_phase(c, 40, raw, 1)  # warm-up: every node has run jobs
        first, pairs = 41, []
        for _ in range(repeat):
            time.sleep(2)
            raw_result = run_phase(c, jobs, raw, first)
            time.sleep(2)
            pairs.append((raw_result, run_phase(c, jobs, api, first + jobs)))
            first += 2 * jobs
        return slots, pairs


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
    slots, runs = run(args.jobs, args.repeat, args.variant, not args.no_accounting)
    raw = median([r[0]["completed_per_s"] for r in runs])
    api = median([r[1]["completed_per_s"] for r in runs])
    print(json.dumps({
        "benchmark": "throughput", "variant": args.variant, "nodes": 4, "job_slots": slots,
        "accounting": not args.no_accounting,
        "jobs_per_run": args.jobs, "runs": args.repeat,
        "raw_sbatch_completed_per_s_median": raw, "cloudhpc_completed_per_s_median": api,
        "cloudhpc_vs_raw": round(api / raw, 3), "target_jobs_per_s": round(0.8 * slots, 1),
        "raw_cpu_ms_per_job_median": median([r[0]["cpu_ms_per_job"] for r in runs]),
        "cloudhpc_cpu_ms_per_job_median": median([r[1]["cpu_ms_per_job"] for r in runs]),
        "meets_target": raw >= 0.8 * slots and api >= 0.9 * raw,
        "samples": [{"raw_sbatch": r[0], "cloudhpc_submit": r[1]} for r in runs],
    }, indent=2))


if __name__ == "__main__":
    main()
