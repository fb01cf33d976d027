"""The one client of Slurm's commands (run on the head node, through the runner) and the one
reader of their output: nodes as a model, node updates, jobs on a node, start now, release,
the queue, one job's record. Every caller (the cluster facade, the job service, lifecycle,
live changes, the reconciler, the power-save programs, the API's view) uses it. Standard
library only: the power-save programs import it and must start fast."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cloudhpc.errors import CommandError, JobError
from cloudhpc.runner import Result, Runner


class Exec(Protocol):
    """Runs argv on the head node (nsenter from this machine, or directly on the head)."""

    def __call__(self, argv: Sequence[str], check: bool = True) -> Result: ...


def on_this_node(runner: Runner | None = None, timeout: float = 60) -> Exec:
    """An Exec for code that already runs on the head node (its daemons)."""
    run = runner or Runner()

    def call(argv: Sequence[str], check: bool = True) -> Result:
        return run.run(argv, check=check, timeout=timeout)

    return call


@dataclass(frozen=True)
class SlurmNode:
    """A node as `sinfo --json` shows it."""

    name: str
    state: str            # idle, allocated, mixed, down, unknown ... (lower case)
    flags: frozenset[str] = frozenset()  # CLOUD, POWERED_DOWN, POWERING_UP, DRAIN ...
    reason: str = ""
    reason_age: float = 0.0  # seconds since the reason was set
    cpus: int = 0
    memory_mib: int = 0  # RealMemory

    @property
    def status(self) -> str:
        """State and flags as `cloudhpc status` prints them: idle+cloud+powered_down."""
        return "+".join([self.state, *(f.lower() for f in sorted(self.flags))])


@dataclass(frozen=True)
class PendingJob:
    job_id: int
    reason: str
    restarts: int


# The queue as `squeue -O` prints it. Job names (and output paths, work directories) are any
# text a user likes, newlines and separators included: parsing by line or by separator let
# a renamed job pose as another user's (issue 10). So the fields no user can set (ids, the
# numeric uid, states, counts, times, Slurm's node and partition names) come first, each
# ended by a unit separator, and the free-text fields come last with a fixed width (Slurm
# pads or cuts them to exactly that many bytes): a record is read from its start, its text
# never decides where the next one begins, and ownership is Slurm's numeric uid. Padding
# every field instead cost squeue 2.6 times the CPU (6.7 MB for 10,000 jobs); `squeue
# --json` says the same in 40 times the bytes (1.75 s of CPU for 11,000 jobs).
SEP = b"\x1f"
QUEUE_FIELDS = [("JobID", "job_id", 0), ("UserId", "user_id", 0),
                ("State", "job_state", 0), ("Reason", "state_reason", 0),
                ("Partition", "partition", 0), ("NodeList", "nodes", 0),
                ("NumNodes", "node_count", 0), ("NumTasks", "tasks", 0),
                ("UserName", "user_name", 0), ("SubmitTime", "submit_time", 0),
                ("StartTime", "start_time", 0), ("EndTime", "end_time", 0),
                ("exit_code", "exit_code", 0), ("Name", "name", 96)]
JOB_FIELDS = [*QUEUE_FIELDS, ("STDOUT", "standard_output", 1024),
              ("WorkDir", "current_working_directory", 1024)]
Fields = list[tuple[str, str, int]]


def _format(fields: Fields) -> str:
    return ",".join(f"{name}:{width}" if width else f"{name}:\x1f"
                    for name, _, width in fields)


def _layout(fields: Fields) -> re.Pattern[bytes]:
    """A record: the separated fields (none holds a separator or a newline), then the
    fixed-width ones, then a newline."""
    separated = sum(1 for _, _, width in fields if not width)
    fixed = sum(width for _, _, width in fields)
    return re.compile(rb"((?:[^\x1f\n]*\x1f){%d})(.{%d})\n" % (separated, fixed), re.S)


QUEUE_FORMAT = _format(QUEUE_FIELDS)
JOB_FORMAT = _format(JOB_FIELDS)
_LAYOUTS = {id(QUEUE_FIELDS): _layout(QUEUE_FIELDS), id(JOB_FIELDS): _layout(JOB_FIELDS)}


def _epoch(stamp: str) -> int:
    if not stamp or not stamp[0].isdigit():  # N/A, NONE, Unknown
        return 0
    try:
        return int(time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")))  # local time
    except ValueError:
        return 0


def _count(text: str) -> int:
    """A count; N/A and Slurm's "not set" values (NO_VAL and up) are 0."""
    return int(text) if text.isdigit() and int(text) < 2**31 else 0


def split_records(data: bytes, fields: Fields = QUEUE_FIELDS) -> list[bytes]:
    """The records of DATA, one after another from its start; reading stops where the
    layout does not hold (a cut output)."""
    layout = _LAYOUTS.get(id(fields)) or _layout(fields)
    out: list[bytes] = []
    at = 0
    for m in layout.finditer(data):
        if m.start() != at:
            break
        out.append(m.group(0))
        at = m.end()
    return out


def parse_record(record: bytes, fields: Fields = QUEUE_FIELDS) -> dict[str, Any] | None:
    """One record -> the fields `squeue --json` names (None if it is no job's)."""
    row: dict[str, Any] = {}
    at = 0
    for _, key, width in fields:
        if width:
            raw, at = record[at:at + width], at + width
        else:
            end = record.find(SEP, at)
            if end < 0:
                return None
            raw, at = record[at:end], end + 1
        text = raw.decode(errors="replace")
        row[key] = text.rstrip(" ") if key == "name" else text.strip()
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


def parse_queue(data: bytes, fields: Fields = QUEUE_FIELDS) -> list[dict[str, Any]]:
    return [row for row in (parse_record(r, fields) for r in split_records(data, fields))
            if row is not None]


# cloudhpc's submission id, carried into Slurm as the job's comment (GRANT_PREFIX for a
# user's staged job, whose blob tokens the prolog makes)
SUB_ID = r"\d{8}-\d{6}-[0-9a-f]{6}"
COMMENT = re.compile(rf"cloudhpc(?:-stage)?:({SUB_ID})")
COMMENT_FIELDS: Fields = [("JobID", "job_id", 0), ("UserId", "user_id", 0),
                          ("Comment", "comment", 64)]
COMMENT_FORMAT = _format(COMMENT_FIELDS)


def parse_comments(data: bytes) -> dict[str, list[tuple[int, int]]]:
    """cloudhpc submission id -> [(job id, uid)] of the jobs whose comment names it. The
    comment is the user's to change: callers match the uid too."""
    out: dict[str, list[tuple[int, int]]] = {}
    for record in split_records(data, COMMENT_FIELDS):
        job, _, rest = record.partition(SEP)
        uid, _, comment = rest.partition(SEP)
        m = COMMENT.fullmatch(comment.decode(errors="replace").strip())
        if m and job.isdigit() and uid.isdigit():
            out.setdefault(m.group(1), []).append((int(job), int(uid)))
    return out


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


ALL_STATES = "BF,CA,CD,DL,F,NF,OOM,PD,PR,R,RQ,RS,RV,S,TO"
USAGE_FIELDS = ["JobIDRaw", "UID", "User", "Account", "Partition", "NNodes", "AllocCPUS",
                "ElapsedRaw", "NodeList", "State", "Start", "End"]


@dataclass(frozen=True)
class UsageRecord:
    """One job's allocation as Slurm's accounting recorded it."""

    job_id: int
    uid: int
    user: str
    account: str
    partition: str
    nodes: int
    cpus: int
    seconds: int
    node_list: str
    state: str
    start: str
    end: str


def parse_usage(text: str) -> list[UsageRecord]:
    """`sacct --parsable2 --delimiter=\\x1f` rows of USAGE_FIELDS (bad rows are skipped)."""
    out = []
    for line in text.splitlines():
        f = line.split("\x1f")
        if len(f) != len(USAGE_FIELDS) or not f[0].isdigit() or not f[1].isdigit():
            continue
        try:
            out.append(UsageRecord(int(f[0]), int(f[1]), f[2], f[3], f[4], int(f[5] or 0),
                                   int(f[6] or 0), int(f[7] or 0), f[8],
                                   f[9].split(" ")[0], f[10], f[11]))
        except ValueError:
            continue
    return out


class SlurmClient:
    """Slurm commands through `exec_head`, which runs argv on the head node."""

    def __init__(self, exec_head: Exec) -> None:
        self.exec_head = exec_head

    def _json(self, argv: list[str]) -> dict[str, Any]:
        result = self.exec_head(argv)
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    # -- nodes --------------------------------------------------------------------------
    def nodes(self, now: float | None = None) -> list[SlurmNode]:
        now = time.time() if now is None else now
        out = []
        for raw in self._json(["sinfo", "--json"])["nodes"]:
            changed = float(raw.get("reason_changed_at") or 0)
            out.append(SlurmNode(raw["name"], str(raw.get("state", "unknown")).lower(),
                                 frozenset(raw.get("state_flags", [])),
                                 raw.get("reason", "") or "",
                                 now - changed if changed else 0.0, int(raw.get("cpus", 0)),
                                 int(raw.get("real_memory", 0))))
        return out

    def update_node(self, node: str, *settings: str) -> bool:
        """`scontrol update nodename=NODE SETTINGS...`; False if Slurm refused."""
        return self.exec_head(["scontrol", "update", f"nodename={node}", *settings],
                              check=False).returncode == 0

    def take_out(self, node: str, reason: str) -> None:
        """Take a node that cannot serve out of Slurm: down (its jobs are requeued), powered
        down (the SuspendProgram removes what is left), and its jobs let run at once rather
        than after Slurm's requeue delay, so that they may run on other nodes now."""
        jobs = self.jobs_on(node)
        self.update_node(node, "state=down", f"reason={reason[:120]}")
        self.update_node(node, "state=power_down_force")
        for job in jobs:
            self.start_now(job)

    # -- jobs ---------------------------------------------------------------------------
    def jobs_on(self, node: str) -> list[int]:
        out = self.exec_head(["squeue", "-h", "-t", "CF,R,CG", "-w", node, "-o", "%i"],
                             check=False).stdout
        return [int(j) for j in out.split() if j.isdigit()]

    def job_ids(self, states: str = "all") -> set[int]:
        out = self.exec_head(["squeue", "-h", f"--states={states}", "-o", "%i"]).stdout
        return {int(j) for j in out.split() if j.isdigit()}

    def pending(self) -> list[PendingJob]:
        rows = self.exec_head(["squeue", "-h", "-t", "PD", "-O",
                               "JobID:\x1f,Reason:\x1f,RestartCnt:\x1f"]).stdout
        out = []
        for row in rows.splitlines():
            job, reason, restarts = ([p.strip() for p in row.split("\x1f")] + ["", "", ""])[:3]
            if job.isdigit():
                out.append(PendingJob(int(job), reason,
                                      int(restarts) if restarts.isdigit() else 0))
        return out

    def submissions(self) -> dict[str, list[tuple[int, int]]]:
        """Every job Slurm knows that carries a cloudhpc submission id (parse_comments)."""
        out = self.exec_head(["squeue", "--noheader", "--states=all", "-O", COMMENT_FORMAT])
        return parse_comments(out.stdout.encode("utf-8", "surrogateescape"))

    def start_now(self, job_id: int) -> None:
        """Skip a requeued job's begin-time delay."""
        self.exec_head(["scontrol", "update", f"jobid={job_id}", "starttime=now"], check=False)

    def release(self, job_id: int) -> None:
        self.exec_head(["scontrol", "release", str(job_id)], check=False)

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

    def sbatch(self, options: Sequence[str], script: str) -> int:
        out = self.exec_head(["sbatch", "--parsable", *options, script]).stdout.strip()
        match = re.match(r"^(\d+)", out)
        if not match:
            raise JobError(f"sbatch printed no job id: {out!r}")
        return int(match.group(1))

    def cancel(self, job_id: int) -> None:
        self.exec_head(["scancel", str(job_id)])

    # -- accounting (slurmdbd) -----------------------------------------------------------
    def associations(self) -> set[tuple[str, str]]:
        """(account, user) of every user association of this cluster (sacctmgr)."""
        out = self.exec_head(["sacctmgr", "--noheader", "--parsable2", "show", "associations",
                              "format=account,user"]).stdout
        pairs = (line.split("|") for line in out.splitlines() if "|" in line)
        return {(a, u) for a, u, *_ in pairs if u}

    def accounts(self) -> set[str]:
        out = self.exec_head(["sacctmgr", "--noheader", "--parsable2", "show", "accounts",
                              "format=account"]).stdout
        return {line.strip() for line in out.splitlines() if line.strip()}

    def add_account(self, account: str) -> None:
        self.exec_head(["sacctmgr", "--immediate", "add", "account", account,
                        "description=cloudhpc", "organization=cloudhpc"])

    def add_user(self, user: str, account: str) -> None:
        """USER in ACCOUNT, which becomes its default account if it had none."""
        self.exec_head(["sacctmgr", "--immediate", "add", "user", user,
                        f"account={account}", f"defaultaccount={account}"])

    def usage(self, since: str, until: str, job_id: int | None = None,
              ) -> list[UsageRecord]:
        """Jobs that ran between SINCE and UNTIL (sacct's time formats), from accounting:
        allocations only (no steps). Every field is one Slurm sets (ids, counts, times,
        node names, the account it checked); the free-text ones (names, comments) are not
        read."""
        argv = ["sacct", "--allusers", "--allocations", "--noheader", "--parsable2",
                "--delimiter=\x1f", f"--format={','.join(USAGE_FIELDS)}"]
        # every state named: a window query without states selects by eligible time, and
        # some jobs are recorded with none ('Unknown'; seen for a job started at once)
        argv += ["--jobs", str(job_id)] if job_id is not None else \
            [f"--starttime={since}", f"--endtime={until}", f"--state={ALL_STATES}"]
        return parse_usage(self.exec_head(argv).stdout)

    # -- the controller -----------------------------------------------------------------
    def ping(self) -> bool:
        try:
            return "UP" in self.exec_head(["scontrol", "ping"]).stdout
        except CommandError:
            return False

    def shutdown_controller(self) -> None:
        """`scontrol shutdown slurmctld`: it saves every job first (its supervisor starts
        it again)."""
        self.exec_head(["scontrol", "shutdown", "slurmctld"])

    def reconfigure(self) -> None:
        self.exec_head(["scontrol", "reconfigure"])
