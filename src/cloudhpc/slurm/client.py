"""The one seam that runs Slurm commands (on the head node) and reads their output."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cloudhpc.errors import CommandError, JobError
from cloudhpc.runner import Result

Exec = Callable[[Sequence[str]], Result]

# The queue as `squeue -O` prints it with a fixed width per field: Slurm pads or cuts every
# field to its width, so each job is exactly RECORD bytes whatever its free text holds. Job
# names (and comments, paths) are any text a user likes, newlines and separators included:
# parsing by line or by separator let a renamed job pose as another user's (issue 10). Here
# a record is cut at fixed offsets and ownership is Slurm's numeric uid. Paths (StdOut,
# WorkDir) are not in the bulk query (cloudhpc keeps its jobs' paths itself; `job` asks for
# one job's). `squeue --json` says the same in 40 times the bytes: with 11,000 jobs it took
# 1.75 s of CPU against ~0.1 s for this.
QUEUE_FIELDS = [("JobID", "job_id", 20), ("UserId", "user_id", 12),
                ("State", "job_state", 24), ("Reason", "state_reason", 64),
                ("Partition", "partition", 32), ("NodeList", "nodes", 256),
                ("NumNodes", "node_count", 10), ("NumTasks", "tasks", 10),
                ("UserName", "user_name", 40), ("SubmitTime", "submit_time", 20),
                ("StartTime", "start_time", 20), ("EndTime", "end_time", 20),
                ("exit_code", "exit_code", 12), ("Name", "name", 128)]
JOB_FIELDS = [*QUEUE_FIELDS, ("STDOUT", "standard_output", 1024),
              ("WorkDir", "current_working_directory", 1024)]


def _format(fields: list[tuple[str, str, int]]) -> str:
    return ",".join(f"{name}:{width}" for name, _, width in fields)


QUEUE_FORMAT = _format(QUEUE_FIELDS)
JOB_FORMAT = _format(JOB_FIELDS)


def _epoch(stamp: str) -> int:
    if not stamp or not stamp[0].isdigit():  # N/A, NONE, Unknown
        return 0
    return int(time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")))  # Slurm's local time


def _count(text: str) -> int:
    """A count; N/A and Slurm's "not set" values (NO_VAL and up) are 0."""
    return int(text) if text.isdigit() and int(text) < 2**31 else 0


def _record_size(fields: list[tuple[str, str, int]]) -> int:
    return sum(width for _, _, width in fields) + 1  # and the newline


def parse_record(record: bytes, fields: list[tuple[str, str, int]] = QUEUE_FIELDS,
                 ) -> dict[str, Any] | None:
    """One fixed-width record -> the fields `squeue --json` names (None if it is no job's)."""
    row: dict[str, Any] = {}
    at = 0
    for _, key, width in fields:
        text = record[at:at + width].decode(errors="replace")
        at += width
        row[key] = text.strip(" ") if key == "name" else text.strip()
    if not row["job_id"].isdigit() or not row["user_id"].isdigit():
        return None
    row["job_id"] = int(row["job_id"])
    row["user_id"] = int(row["user_id"])
    for key in ("node_count", "tasks"):
        row[key] = _count(row[key])
    for key in ("submit_time", "start_time", "end_time"):
        row[key] = _epoch(row[key])
    row["exit_code"] = _count(row["exit_code"].split(":")[0])
    return row


def split_records(data: bytes, fields: list[tuple[str, str, int]] = QUEUE_FIELDS,
                  ) -> list[bytes]:
    size = _record_size(fields)
    return [data[i:i + size] for i in range(0, len(data) - size + 1, size)]


def parse_queue(data: bytes, fields: list[tuple[str, str, int]] = QUEUE_FIELDS,
                ) -> list[dict[str, Any]]:
    return [row for row in (parse_record(r, fields) for r in split_records(data, fields))
            if row is not None]


JOBCOMP_HEAD = re.compile(r"JobId=(\d+) UserId=[^()\n]*\((\d+)\) GroupId=")


@dataclass(frozen=True)
class JobcompRecord:
    job_id: int
    uid: int | None  # None: the file holds records of this id with different owners
    line: str


def parse_jobcomp(text: str) -> list[JobcompRecord]:
    """Records of Slurm's jobcomp/filetxt file. A job name may hold a newline followed by a
    forged record, so a job id whose records disagree on the owner gets no owner (None): the
    forged record can never hand a job to its forger; cloudhpc's own record or the queue's
    numeric uid decide instead (api/view.py, jobs/service.py)."""
    found: dict[int, JobcompRecord] = {}
    for line in text.splitlines():
        m = JOBCOMP_HEAD.match(line)
        if m is None:
            continue
        job_id, uid = int(m.group(1)), int(m.group(2))
        seen = found.get(job_id)
        if seen is not None and seen.uid != uid:
            found[job_id] = JobcompRecord(job_id, None, seen.line)
        elif seen is None or seen.uid is not None:
            found[job_id] = JobcompRecord(job_id, uid, line)
    return list(found.values())


class SlurmClient:
    """Slurm commands through `exec_head`, which runs argv on the head node."""

    def __init__(self, exec_head: Exec) -> None:
        self.exec_head = exec_head

    def _json(self, argv: list[str]) -> dict[str, Any]:
        result = self.exec_head(argv)
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self._json(["sinfo", "--json"])["nodes"]
        return nodes

    def jobs(self, job_ids: Sequence[int] = ()) -> list[dict[str, Any]]:
        jobs = parse_queue(self.queue_bytes())
        if job_ids:
            wanted = set(job_ids)
            jobs = [j for j in jobs if j.get("job_id") in wanted]
        return jobs

    def queue_bytes(self) -> bytes:
        """Every job Slurm knows, one fixed-width `squeue -O QUEUE_FORMAT` record each."""
        return self.exec_head(["squeue", "--noheader", "--states=all", "-O",
                               QUEUE_FORMAT]).stdout.encode("utf-8", "surrogateescape")

    def job(self, job_id: int) -> dict[str, Any] | None:
        """One job, with its output path and directory (cheap: one job, not the queue)."""
        if job_id < 1:
            return None
        try:
            out = self.exec_head(["squeue", "--noheader", "--states=all", "-j", str(job_id),
                                  "-O", JOB_FORMAT]).stdout
        except CommandError as exc:
            if "Invalid job id" in exc.stderr or "not found" in exc.stderr:
                return None
            raise
        rows = parse_queue(out.encode("utf-8", "surrogateescape"), JOB_FIELDS)
        row = next((r for r in rows if r["job_id"] == job_id), None)
        if row is not None:
            row["standard_output"] = row["standard_output"].replace("%j", str(job_id))
        return row

    def sbatch(self, options: list[str], script: str) -> int:
        out = self.exec_head(["sbatch", "--parsable", *options, script]).stdout.strip()
        match = re.match(r"^(\d+)", out)
        if not match:
            raise JobError(f"sbatch printed no job id: {out!r}")
        return int(match.group(1))

    def cancel(self, job_id: int) -> None:
        self.exec_head(["scancel", str(job_id)])

    def ping(self) -> bool:
        try:
            return "UP" in self.exec_head(["scontrol", "ping"]).stdout
        except CommandError:
            return False
