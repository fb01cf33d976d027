"""Job records from Slurm's JSON and jobcomp text."""

from __future__ import annotations

import pytest

from cloudhpc.jobs.model import JobState, from_keyvalues, from_squeue, slurm_state


def test_from_squeue() -> None:
    job = from_squeue({"job_id": 7, "name": "pi", "job_state": "RUNNING", "state_reason": "None",
                       "partition": "hpc", "nodes": "hpc-[1-2]", "node_count": 2, "tasks": 4,
                       "standard_output": "/shared/jobs/x/slurm-%j.out", "exit_code": 0})
    assert job.state is JobState.RUNNING
    assert job.reason == ""
    assert job.stdout == "/shared/jobs/x/slurm-7.out"
    assert not job.done


def test_from_keyvalues() -> None:
    line = ("JobId=2 UserId=root(0) GroupId=root(0) Name=mpi-pi JobState=FAILED Partition=hpc "
            "TimeLimit=UNLIMITED StartTime=2026-11-24T10:42:14 EndTime=2026-11-24T10:42:15 "
            "NodeList=hpc-[1-2] NodeCnt=2 ProcCnt=4 WorkDir=/shared/jobs ExitCode=3:0")
    job = from_keyvalues(line)
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


def test_from_scontrol_line() -> None:
    line = ("JobId=5 JobName=pi UserId=root(0) JobState=PENDING Reason=Resources "
            "ExitCode=0:0 SubmitTime=2026-11-24T10:44:26 StartTime=Unknown EndTime=Unknown "
            "Partition=hpc NodeList=(null) NumNodes=2-2 NumTasks=N/A "
            "StdOut=/shared/jobs/a/slurm-5.out WorkDir=/shared/jobs/a")
    job = from_keyvalues(line)
    assert (job.name, job.state, job.reason, job.node_count) == ("pi", JobState.PENDING,
                                                                 "Resources", 2)
    assert job.nodes == "" and job.start_time == 0 and job.tasks == 0
    assert job.stdout.endswith("slurm-5.out")


def test_parse_queue_reads_squeue_format_output() -> None:
    """Lines as Slurm 22.05's `squeue -O QUEUE_FORMAT` printed them; a name may hold any
    character but the separator, a pending job's end time is NONE, a cancelled one's task
    count is Slurm's NO_VAL."""
    from cloudhpc.slurm.client import QUEUE_FIELDS, SEP, parse_queue

    def line(*values: str) -> str:
        assert len(values) == len(QUEUE_FIELDS)
        return "".join(v + SEP for v in values)

    text = "\n".join([
        line("10001", "COMPLETED", "None", "hpc", "hpc-1", "1", "1", "root",
             "2026-11-27T23:51:56", "2026-11-27T23:51:56", "2026-11-27T23:51:57", "768",
             "/shared/jobs/a/slurm-%j.out", "/shared/jobs/a", "load"),
        line("13137", "CANCELLED", "None", "hpc", "", "1", "4294967294", "alice",
             "2026-11-27T23:55:44", "N/A", "NONE", "0", "/tmp/x-%j.out", "/",
             "long name|with pipe"),
        "garbage line",
    ])
    done, cancelled = parse_queue(text)
    assert done["job_id"] == 10001 and done["nodes"] == "hpc-1"
    assert done["end_time"] - done["start_time"] == 1 and done["submit_time"] > 1.7e9
    job = from_squeue(done)
    assert (job.state, job.exit_code, job.stdout) == (
        JobState.COMPLETED, 3, "/shared/jobs/a/slurm-10001.out")
    assert cancelled["name"] == "long name|with pipe" and cancelled["tasks"] == 0
    assert cancelled["start_time"] == 0 and cancelled["end_time"] == 0
    assert from_squeue(cancelled).user == "alice"
