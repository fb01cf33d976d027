"""Slurm as its users drive it, on a real cluster (issue 13, first part): memory requests are
scheduled, impossible requests are refused at submission with Slurm's own message, and
`srun` starts MPI ranks across nodes through PMIx without being told."""

from __future__ import annotations

import time
from pathlib import Path

from cloudhpc.cluster import Cluster
from cloudhpc.jobs.model import JobState


def _sbatch(cluster: Cluster, *args: str) -> tuple[int, str]:
    res = cluster.exec_head_unchecked(["sbatch", "--parsable", "--chdir=/shared", *args])
    return res.returncode, (res.stdout + res.stderr).strip()


def _wait(cluster: Cluster, job_id: int) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = cluster.job(job_id)
        if job.done:
            return job.state.value
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end")


def test_memory_requests_are_scheduled(cluster: Cluster) -> None:
    nodes = {n.name: n for n in cluster.slurm.nodes()}
    assert nodes["hpc-1"].memory_mib == 16 * 1024  # Standard_D4s_v5, 16 GiB
    for option in ("--mem=1G", "--mem-per-cpu=512M", "--mem=16G"):
        rc, out = _sbatch(cluster, option, "--wrap", "true")
        assert rc == 0, (option, out)
        assert _wait(cluster, int(out.split(";")[0])) == "completed"
    rc, out = _sbatch(cluster, "--mem=64G", "--wrap", "true")  # more than any node has
    assert rc != 0, out
    assert "memory" in out.lower() or "configuration" in out.lower(), out


def test_impossible_requests_are_refused_at_submission(cluster: Cluster) -> None:
    rc, out = _sbatch(cluster, "-N3", "--wrap", "true")  # the partition has 2 nodes
    assert rc != 0, out
    assert "node count specification invalid" in out.lower() or "limit" in out.lower(), out


def test_srun_starts_mpi_ranks_through_pmix(cluster: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "ranks.sh"
    script.write_text("#!/bin/bash\nsrun python3 -c \"from mpi4py import MPI; "
                      "c = MPI.COMM_WORLD; print('RANK', c.rank, c.size, "
                      "MPI.Get_processor_name())\"\n")
    job = cluster.submit(script, nodes=2, ntasks_per_node=2, wait=True, timeout=120)
    out = cluster.logs(job.job_id)
    assert job.state is JobState.COMPLETED, out
    ranks = sorted(line.split()[1:] for line in out.splitlines() if line.startswith("RANK"))
    assert ranks == [["0", "4", "hpc-1"], ["1", "4", "hpc-1"], ["2", "4", "hpc-2"],
                     ["3", "4", "hpc-2"]], out
