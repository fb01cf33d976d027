"""Issue 13: the Python clients HPC users submit with, unchanged and with their default
settings (memory included), run as an ordinary user on the head node of a real cluster:
submitit gets its results back, sees a finished job as COMPLETED and a job that died
without a result as FAILED (it reads sacct); dask-jobqueue starts its workers with sbatch
and computes on them; Parsl's SlurmProvider (its defaults: an exclusive node, memory per
node) runs a Python and a Bash app on a compute node."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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

PARSL = """\
import os
import sys

import parsl
from parsl.addresses import address_by_hostname
from parsl.app.app import bash_app, python_app
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import SlurmProvider

# as in an activated virtualenv: Parsl starts its interchange and workers from PATH
venv = os.path.dirname(sys.executable)
os.environ["PATH"] = venv + ":" + os.environ["PATH"]
provider = SlurmProvider(nodes_per_block=1, init_blocks=1, max_blocks=1, mem_per_node=1,
                         walltime="00:05:00", worker_init=f"export PATH={venv}:$PATH")
parsl.load(Config(executors=[HighThroughputExecutor(
    label="slurm", address=address_by_hostname(), max_workers_per_node=2,
    provider=provider)], run_dir=os.path.expanduser("~/runinfo")))


@python_app
def where(x):
    import socket
    return socket.gethostname(), x * x


@bash_app
def hello(stdout="hello.out"):
    return "echo hello from $(hostname)"


print("APP", where(7).result(timeout=180), flush=True)
hello().result(timeout=120)
print("BASH", open("hello.out").read().strip(), flush=True)
parsl.dfk().cleanup()
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


def test_parsl_slurm_provider_runs_apps_on_a_compute_node(clients: Cluster) -> None:
    out = run_as_user(clients, "with_parsl.py", PARSL)
    assert "APP ('hpc-" in out and ", 49)" in out, out
    assert "BASH hello from hpc-" in out, out
    # its block asked for memory (mem_per_node) and a whole node, and Slurm gave both
    # (slurmctld sends job records to slurmdbd as it can: they may come a moment later)
    for _ in range(60):
        rows = clients.exec_head(["sacct", "-u", USER, "-X", "-n", "-P", "-S", "now-1hour",
                                  "-o", "JobName,ReqMem,AllocCPUS"]).stdout.splitlines()
        blocks = [r.split("|") for r in rows if r.startswith("parsl")]
        if blocks:
            break
        time.sleep(0.5)
    whole = str(clients.plan.compute()[0].cpus)
    assert blocks and blocks[0][1] == "1G" and blocks[0][2] == whole, rows
