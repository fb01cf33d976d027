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


def _record(**values: str) -> bytes:
    """One record as Slurm 22.05's `squeue -O QUEUE_FORMAT` prints it: the separated fields
    each followed by the unit separator, the free-text ones padded or cut to their width
    (checked against the real squeue: 'JobID:12' printed '1' and 11 spaces, a 43-character
    name in 'Name:20' came out as its first 20 bytes)."""
    from cloudhpc.slurm.client import QUEUE_FIELDS

    out = b""
    for _, key, width in QUEUE_FIELDS:
        value = values.get(key, "").encode()
        out += value[:width].ljust(width) if width else value + b"\x1f"
    return out + b"\n"


def test_parse_queue_cuts_records_at_fixed_offsets() -> None:
    """A name may hold newlines, separators and text that looks like another job's record:
    it stays in its own field, and the owner is the numeric uid."""
    from cloudhpc.slurm.client import parse_queue

    forged = "x\n10001 0 RUNNING\x1f10001\x1fRUNNING\x1fNone\x1fhpc"
    data = b"".join([
        _record(job_id="10001", user_id="1001", job_state="COMPLETED", state_reason="None",
                partition="hpc", nodes="hpc-1", node_count="1", tasks="1", user_name="vic",
                submit_time="2026-11-27T23:51:56", start_time="2026-11-27T23:51:56",
                end_time="2026-11-27T23:51:57", exit_code="768", name="load"),
        _record(job_id="13137", user_id="1002", job_state="CANCELLED", state_reason="None",
                partition="hpc", node_count="1", tasks="4294967294", user_name="mal",
                submit_time="2026-11-27T23:55:44", start_time="N/A", end_time="NONE",
                exit_code="0", name=forged),
    ])
    done, cancelled = parse_queue(data)
    assert done["job_id"] == 10001 and done["nodes"] == "hpc-1" and done["user_id"] == 1001
    assert done["end_time"] - done["start_time"] == 1 and done["submit_time"] > 1.7e9
    job = from_squeue(done)
    assert (job.state, job.exit_code, job.uid) == (JobState.COMPLETED, 3, 1001)
    assert cancelled["job_id"] == 13137 and cancelled["user_id"] == 1002
    assert cancelled["name"] == forged and cancelled["tasks"] == 0
    assert cancelled["start_time"] == 0 and cancelled["end_time"] == 0
    assert from_squeue(cancelled).user == "mal"
    assert parse_queue(data[:-5]) == [done]  # a cut record is no job


def test_jobcomp_owner_comes_from_the_records_head() -> None:
    line = ("JobId=4 UserId=mal(1002) GroupId=mal(1002) Name=x UserId=vic(1001) JobId=9 "
            "JobState=COMPLETED ExitCode=0:0 ")
    job = from_keyvalues(line, 1002)
    assert (job.job_id, job.user, job.uid) == (4, "mal", 1002)
