"""Job model: states as an enum mapped from Slurm's through one table."""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass
from typing import Any


class JobState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETING = "completing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    NODE_FAIL = "node_fail"
    UNKNOWN = "unknown"


TERMINAL_STATES = {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT,
                   JobState.NODE_FAIL}

SLURM_STATES = {
    "PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING, "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING, "SUSPENDED": JobState.PENDING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.COMPLETING,
    "COMPLETED": JobState.COMPLETED, "FAILED": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED, "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.TIMEOUT, "CANCELLED": JobState.CANCELLED,
    "PREEMPTED": JobState.CANCELLED, "TIMEOUT": JobState.TIMEOUT,
    "NODE_FAIL": JobState.NODE_FAIL,
}


@dataclass(frozen=True)
class Job:
    job_id: int
    name: str
    state: JobState
    reason: str
    partition: str
    nodes: str
    node_count: int
    tasks: int
    user: str
    submit_time: float
    start_time: float
    end_time: float
    exit_code: int
    stdout: str
    workdir: str
    staging: dict[str, Any] | None = None  # what stage-in / stage-out did, when asked for
    node_seconds: float = 0.0  # finished jobs: nodes x run time
    cost_usd: float = 0.0  # finished jobs: estimated from the sizes' list prices
    uid: int = -1  # the owner's numeric uid (-1: not known for sure; admins only)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state.value
        return out


def slurm_state(name: str) -> JobState:
    return SLURM_STATES.get(name.split()[0].upper(), JobState.UNKNOWN) if name else JobState.UNKNOWN


def from_squeue(raw: dict[str, Any]) -> Job:
    job_id = int(raw["job_id"])
    stdout = str(raw.get("standard_output", "")).replace("%j", str(job_id))
    exit_code = int(raw.get("exit_code") or 0)
    return Job(
        job_id=job_id, name=raw.get("name", ""), state=slurm_state(raw.get("job_state", "")),
        reason=raw.get("state_reason", "") if raw.get("state_reason") != "None" else "",
        partition=raw.get("partition", ""), nodes=raw.get("nodes", ""),
        node_count=int(raw.get("node_count") or 0), tasks=int(raw.get("tasks") or 0),
        user=raw.get("user_name", ""), submit_time=float(raw.get("submit_time") or 0),
        start_time=float(raw.get("start_time") or 0), end_time=float(raw.get("end_time") or 0),
        exit_code=exit_code >> 8 if exit_code > 255 else exit_code, stdout=stdout,
        workdir=raw.get("current_working_directory", ""), uid=int(raw.get("user_id", -1)),
    )


def _epoch(stamp: str) -> float:
    if not stamp or stamp in ("Unknown", "None", "N/A"):
        return 0.0
    try:  # Slurm writes local time
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0


def _int(text: str) -> int:
    """Slurm prints N/A, (null) or a range where a count is not known yet."""
    return int(text) if text.isdigit() else 0


def from_keyvalues(line: str, uid: int | None = None) -> Job:
    """A job from Slurm's jobcomp/filetxt record, for display. Its owner is UID, decided by
    the caller from a source no user can write (slurm.client.parse_jobcomp): the text after
    Name= is the user's and may repeat any key. Job id and user come from the record's
    head, which precedes the name."""
    f = dict(item.split("=", 1) for item in line.split() if "=" in item)
    head = line.split(" Name=", 1)[0]
    for item in head.split():
        key, sep, value = item.partition("=")
        if sep:
            f[key] = value
    code = f.get("ExitCode", "0:0").split(":")[0]
    reason = f.get("Reason", "")
    return Job(
        job_id=int(f["JobId"]), name=f.get("JobName", f.get("Name", "")),
        state=slurm_state(f.get("JobState", "")), reason="" if reason == "None" else reason,
        partition=f.get("Partition", ""), nodes=f.get("NodeList", "").replace("(null)", ""),
        node_count=_int(f.get("NumNodes", f.get("NodeCnt", "0")).split("-")[0]),
        tasks=_int(f.get("NumTasks", f.get("ProcCnt", "0"))),
        user=f.get("UserId", "").split("(")[0],
        submit_time=_epoch(f.get("SubmitTime", "")), start_time=_epoch(f.get("StartTime", "")),
        end_time=_epoch(f.get("EndTime", "")), exit_code=_int(code),
        stdout="", workdir="", uid=-1 if uid is None else uid,
    )
