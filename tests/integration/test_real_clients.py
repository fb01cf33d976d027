"""Issue 13: the Python clients HPC users submit with, unchanged and with their default
settings (memory included), run as an ordinary user on the head node of a real cluster:
submitit gets its results back, sees a finished job as COMPLETED and a job that died
without a result as FAILED (it reads sacct); dask-jobqueue starts its workers with sbatch
and computes on them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudhpc.cluster import Cluster
from tests.conftest import template

USER = "cht-client"

SUBMITIT = """\
import os
import time

import submitit


def die():
    os.kill(os.getpid(), 9)


executor = submitit.AutoExecutor(folder=os.path.expanduser("~/submitit"))
executor.update_parameters(timeout_min=5, mem_gb=1, cpus_per_task=1)
job = executor.submit(pow, 2, 10)
print("RESULT", job.result(), flush=True)
for _ in range(60):
    if job.state not in ("UNKNOWN", "PENDING", "RUNNING", "COMPLETING"):
        break
    time.sleep(1)
print("STATE", job.state, flush=True)
dead = executor.submit(die)
try:
    dead.result()
    print("DEAD-JOB-GAVE-A-RESULT", flush=True)
except Exception as exc:
    print("DIED", type(exc).__name__, dead.state, flush=True)
"""

DASK = """\
import sys

from dask_jobqueue import SLURMCluster
from distributed import Client

cluster = SLURMCluster(cores=1, memory="1GB", walltime="00:05:00", python=sys.executable)
print("MEM-LINE", [l for l in cluster.job_script().splitlines() if "--mem" in l], flush=True)
cluster.scale(2)
client = Client(cluster)
client.wait_for_workers(2, timeout=180)
print("SUM", client.submit(sum, [1, 2, 3]).result(timeout=60), flush=True)
print("WORKERS", len(client.scheduler_info()["workers"]), flush=True)
client.close()
cluster.close()
"""


@pytest.fixture(scope="module")
def clients(home: Path) -> Iterator[Cluster]:
    c = Cluster.up(template("t-clients", "198.19.26.0/24", count=2))
    try:
        c.give_association(USER)
        yield c
    finally:
        c.down()
        subprocess.run(["userdel", USER], capture_output=True)


def run_as_user(c: Cluster, name: str, text: str, timeout: float = 300) -> str:
    """Write the program into the user's home (every node's /home) and run it there, on
    the head, as the user, with this test run's Python (the project's virtualenv)."""
    home = c.dir.homes / USER
    program = home / name
    program.write_text(text)
    st = home.stat()
    os.chown(program, st.st_uid, st.st_gid)
    result = c.exec("head", ["runuser", "-l", USER, "-c",
                             f"cd ~ && {sys.executable} {name}"], timeout=timeout)
    return result.stdout + result.stderr


def test_submitit_gets_results_and_sees_a_dead_job_fail(clients: Cluster) -> None:
    out = run_as_user(clients, "with_submitit.py", SUBMITIT)
    assert "RESULT 1024" in out, out
    assert "STATE COMPLETED" in out, out
    assert "DIED UncompletedJobError FAILED" in out, out


def test_dask_jobqueue_workers_compute(clients: Cluster) -> None:
    out = run_as_user(clients, "with_dask.py", DASK)
    assert "--mem=" in out, out  # its default job script asks for memory
    assert "SUM 6" in out, out
    assert "WORKERS 2" in out, out
