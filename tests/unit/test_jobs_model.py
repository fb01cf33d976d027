"""Job records from Slurm's JSON and jobcomp text."""

from __future__ import annotations

import pytest

from cloudhpc.jobs.model import JobState, from_jobcomp, from_squeue, slurm_state


def test_from_squeue() -> None:
    job = from_squeue({"job_id": 7, "name": "pi", "job_state": "RUNNING", "state_reason": "None",
                       "partition": "hpc", "nodes": "hpc-[1-2]", "node_count": 2, "tasks": 4,
                       "standard_output": "/shared/jobs/x/slurm-%j.out", "exit_code": 0})
    assert job.state is JobState.RUNNING
    assert job.reason == ""
    assert job.stdout == "/shared/jobs/x/slurm-7.out"
    assert not job.done


def test_from_jobcomp() -> None:
    line = ("JobId=2 UserId=root(0) GroupId=root(0) Name=mpi-pi JobState=FAILED Partition=hpc "
            "TimeLimit=UNLIMITED StartTime=2026-11-24T10:42:14 EndTime=2026-11-24T10:42:15 "
            "NodeList=hpc-[1-2] NodeCnt=2 ProcCnt=4 WorkDir=/shared/jobs ExitCode=3:0")
    job = from_jobcomp(line)
    assert (job.job_id, job.state, job.exit_code, job.user) == (2, JobState.FAILED, 3, "root")
    assert job.end_time - job.start_time == 1
    assert job.done


@pytest.mark.parametrize(("raw", "state"), [
    ("PENDING", JobState.PENDING), ("COMPLETED", JobState.COMPLETED),
    ("CANCELLED by 0", JobState.CANCELLED), ("NODE_FAIL", JobState.NODE_FAIL),
    ("", JobState.UNKNOWN), ("WEIRD", JobState.UNKNOWN),
])
def test_state_table(raw: str, state: JobState) -> None:
    assert slurm_state(raw) is state
