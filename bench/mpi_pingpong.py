"""MPI 0-byte latency and 4 MiB bandwidth between two nodes with the user's plain `mpirun`,
beside a raw TCP ping-pong over the same bridge. Targets: <= 15 us, >= 2.5 GB/s. JSON out."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import bench_home, cluster, template

from cloudhpc.jobs.model import JobState

HERE = Path(__file__).parent
JOB = """#!/bin/bash
mpirun python3 /shared/bench/pingpong_mpi.py
"""


def main() -> None:
    with bench_home(), cluster(template("b-mpi", "198.19.22.0/24", 2)) as c:
        (c.dir.shared / "bench").mkdir()
        for name in ("pingpong_mpi.py", "pingpong_tcp.py"):
            shutil.copy(HERE / name, c.dir.shared / "bench" / name)
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "pingpong.sh"
            script.write_text(JOB)
            job = c.submit(script, nodes=2, ntasks_per_node=1, wait=True, timeout=300)
        out = c.logs(job.job_id)
        if job.state is not JobState.COMPLETED:
            raise SystemExit(f"ping-pong job failed:\n{out}")
        mpi = json.loads(out.strip().splitlines()[-1])
        server = subprocess.Popen(c.node_argv("hpc-2", ["python3", "/shared/bench/pingpong_tcp.py",
                                                        "server", "7777"]))
        time.sleep(0.3)
        tcp = json.loads(c.exec("hpc-1", ["python3", "/shared/bench/pingpong_tcp.py", "client",
                                          "hpc-2", "7777"], check=True).stdout)
        server.wait(timeout=10)
    print(json.dumps({
        "benchmark": "mpi_pingpong", "mpirun": "plain `mpirun python3 app.py` in sbatch -N2",
        **mpi, **tcp, "targets": {"latency_us": 15, "bandwidth_GBps": 2.5},
        "meets_targets": mpi["latency_us"] <= 15 and mpi["bandwidth_GBps"] >= 2.5,
    }, indent=2))


if __name__ == "__main__":
    main()
