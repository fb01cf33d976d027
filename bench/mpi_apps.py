"""A standard HPC benchmark suite, the HPC Challenge (Debian's `hpcc`: HPL, DGEMM, STREAM,
PTRANS, RandomAccess, FFT and the b_eff ring latency and bandwidth), run twice with the same
rank count on this machine: once with bare `mpirun --oversubscribe` on the machine itself,
once as a job across two local nodes of a cluster. Prints both sets of figures and their
ratios as JSON.

Targets (issue 13): the cluster run at >= 0.9x the bare run (HPL, the compute-bound
figure), ring latency across nodes <= 30 us.

    python bench/mpi_apps.py [RANKS=4] [N=4000]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import bench_home, cluster, template

from cloudhpc.jobs.model import JobState
from cloudhpc.jobs.request import JobRequest

# the figures compared (hpcc's summary names); for the times and latencies lower is better
FIGURES = ["HPL_Tflops", "StarDGEMM_Gflops", "StarSTREAM_Triad", "PTRANS_GBs",
           "MPIRandomAccess_GUPs", "MPIFFT_Gflops", "NaturallyOrderedRingLatency_usec",
           "RandomlyOrderedRingLatency_usec", "NaturallyOrderedRingBandwidth_GBytes",
           "MaxPingPongLatency_usec"]
LOWER_IS_BETTER = {"NaturallyOrderedRingLatency_usec", "RandomlyOrderedRingLatency_usec",
                   "MaxPingPongLatency_usec"}


def hpcc_input(n: int, p: int, q: int) -> str:
    """Debian's example input (/usr/share/doc/hpcc/examples/_hpccinf.txt) with one problem
    size N and a P x Q process grid."""
    text = Path("/usr/share/doc/hpcc/examples/_hpccinf.txt").read_text()
    lines = text.splitlines()
    lines[5] = f"{n:<13}Ns"
    lines[7] = f"{'128':<13}NBs"
    lines[10] = f"{p:<13}Ps"
    lines[11] = f"{q:<13}Qs"
    return "\n".join(lines) + "\n"


def summary(out: str) -> dict[str, float]:
    """The 'Begin of Summary section' key=value lines of hpccoutf.txt."""
    m = re.search(r"Begin of Summary section.(.*?)End of Summary section", out, re.S)
    if not m:
        raise SystemExit(f"hpcc wrote no summary:\n{out[-3000:]}")
    values: dict[str, float] = {}
    for line in m.group(1).splitlines():
        key, _, value = line.partition("=")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            continue
    return {k: values[k] for k in FIGURES if k in values}


def grid(ranks: int) -> tuple[int, int]:
    p = int(ranks ** 0.5)
    while ranks % p:
        p -= 1
    return p, ranks // p


def bare(ranks: int, n: int) -> tuple[dict[str, float], float]:
    with tempfile.TemporaryDirectory(prefix="hpcc-bare-") as tmp:
        Path(tmp, "hpccinf.txt").write_text(hpcc_input(n, *grid(ranks)))
        start = time.perf_counter()
        subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(ranks),
                        "hpcc"], cwd=tmp, check=True, capture_output=True,
                       env={**os.environ, "OMPI_MCA_btl": "self,vader"})
        took = time.perf_counter() - start
        return summary(Path(tmp, "hpccoutf.txt").read_text()), took


JOB = """#!/bin/bash
cd /shared/bench-hpcc
start=$(date +%s.%N)
{launch} hpcc
end=$(date +%s.%N)
echo "WALL $start $end"
"""


def on_cluster(ranks: int, n: int, launch: str) -> tuple[dict[str, float], float]:
    nodes = 2
    spec = template("b-apps", "198.19.23.0/24", nodes)
    with cluster(spec) as c:
        work = c.dir.shared / "bench-hpcc"
        work.mkdir()
        (work / "hpccinf.txt").write_text(hpcc_input(n, *grid(ranks)))
        job = c.submit(JobRequest(script=JOB.format(launch=launch), name="hpcc",
                                  nodes=nodes, ntasks_per_node=ranks // nodes),
                       wait=True, timeout=1800)
        out = c.logs(job.job_id)
        if job.state is not JobState.COMPLETED:
            raise SystemExit(f"hpcc job failed:\n{out[-3000:]}")
        wall = next(line.split() for line in out.splitlines() if line.startswith("WALL "))
        return summary((work / "hpccoutf.txt").read_text()), float(wall[2]) - float(wall[1])


def ratios(local: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    out = {}
    for key in FIGURES:
        if key in local and key in base and local[key] and base[key]:
            r = base[key] / local[key] if key in LOWER_IS_BETTER else local[key] / base[key]
            out[key] = round(r, 3)
    return out


def main() -> None:
    ranks = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    if not shutil.which("hpcc"):
        raise SystemExit("hpcc is missing: run `make install` (Debian's hpcc package)")
    base, base_wall = bare(ranks, n)
    with bench_home():
        srun, srun_wall = on_cluster(ranks, n, "srun")
    with bench_home():
        mpirun, mpirun_wall = on_cluster(ranks, n, "mpirun")
    hpl = ratios(srun, base).get("HPL_Tflops", 0.0)
    ring = srun.get("NaturallyOrderedRingLatency_usec", 0.0)
    print(json.dumps({
        "benchmark": "mpi_apps", "suite": "hpcc (HPC Challenge, Debian)", "ranks": ranks,
        "hpl_n": n, "nodes": 2,
        "bare_mpirun_oversubscribe": {"figures": base, "wall_s": round(base_wall, 2)},
        "cluster_srun": {"figures": srun, "wall_s": round(srun_wall, 2),
                         "ratio_to_bare": ratios(srun, base)},
        "cluster_mpirun": {"figures": mpirun, "wall_s": round(mpirun_wall, 2),
                           "ratio_to_bare": ratios(mpirun, base)},
        "hpl_ratio_srun": hpl, "ring_latency_us_srun": ring,
        "targets": {"hpl_ratio": 0.9, "ring_latency_us": 30.0},
        "meets_targets": hpl >= 0.9 and 0 < ring <= 30.0,
    }, indent=2))


if __name__ == "__main__":
    main()
