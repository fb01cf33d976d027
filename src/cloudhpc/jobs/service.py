"""The job service: submit (into a per-submission directory under /shared), list, show,
wait, logs, cancel, straight through Slurm. It is given its collaborators — the Slurm
client, the state store, the event log, the cluster's layout and plan, the blob store and a
way to run a command on the head — not the cluster facade."""

from __future__ import annotations

import dataclasses
import os
import pwd
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hostlist

from cloudhpc.cost import job_cost
from cloudhpc.errors import CommandError, JobError
from cloudhpc.events import EventKind, EventLog
from cloudhpc.jobs import staging, users, wrapper
from cloudhpc.jobs.files import Run, read_as, read_status
from cloudhpc.jobs.model import Job, JobState, from_keyvalues, from_squeue
from cloudhpc.jobs.request import JobRequest
from cloudhpc.jobs.submissions import KeyInUse, Submission, Submissions
from cloudhpc.jobs.wait import wait_until_done
from cloudhpc.paths import ClusterDir
from cloudhpc.plan import Plan
from cloudhpc.report import job_usage
from cloudhpc.slurm.accounting import Associations
from cloudhpc.slurm.client import SlurmClient, parse_jobcomp
from cloudhpc.slurm.conf import COMMENT_PREFIX, GRANT_PREFIX, SlurmPaths
from cloudhpc.slurm.jobcomp import FinishedJobs
from cloudhpc.state import JobRecord, Store
from cloudhpc.storage.access import ROOT, ContainerAccess, Who
from cloudhpc.storage.blob import BlobStore


@dataclass(frozen=True)
class Submitter:
    """Who submits: a Unix user (the API's callers; None: root, from this machine), whether
    an admin, and the API token (its blob rights)."""

    user: str | None = None
    admin: bool = False
    token: str = ""


ROOT_SUBMITTER = Submitter()


class InFlight(JobError):
    """An earlier request with the same Idempotency-Key may still reach Slurm."""
IN_FLIGHT = 120.0  # a submission not in Slurm after this long never reached it
SBATCH_RETRY_FOR = 30.0
# sbatch errors of a controller or munge being restarted (not a refusal of the job)
TRANSIENT = ("Unable to contact slurm controller", "Socket timed out", "Connection refused",
             "Zero Bytes were transmitted", "Protocol authentication error", "munge",
             "Munge", "Slurm temporarily unable")


class JobService:
    def __init__(self, cluster: str, plan: Plan, layout: ClusterDir, slurm: SlurmClient,
                 store: Store, events: EventLog, run_on_head: Run,
                 blobs: Callable[[], BlobStore], submissions: Submissions,
                 associations: Associations) -> None:
        """RUN_ON_HEAD runs argv on the head node and returns failures (reading a user's
        files as that user); BLOBS opens the blob store (only when a job stages data)."""
        self.cluster = cluster
        self.plan = plan
        self.layout = layout
        self.slurm = slurm
        self.store = store
        self.events = events
        self.run_on_head = run_on_head
        self.blobs = blobs
        self.submissions = submissions
        self.associations = associations
        self.finished = FinishedJobs(SlurmPaths(str(layout.root)).jobcomp)

    # -- submit ---------------------------------------------------------------------------
    def _check(self, request: JobRequest) -> None:
        parts = {p.name: p for p in self.plan.partitions}
        if request.partition is not None and request.partition not in parts:
            raise JobError(f"no partition '{request.partition}' in cluster '{self.cluster}'",
                           hint=f"partitions: {', '.join(parts)}")
        part = parts[request.partition] if request.partition else \
            next(p for p in parts.values() if p.default)
        if request.nodes is not None and not 1 <= request.nodes <= len(part.nodes):
            raise JobError(f"--nodes {request.nodes} is not possible in partition "
                           f"'{part.name}' (it has at most {len(part.nodes)} nodes)",
                           hint=f"ask for 1 to {len(part.nodes)} nodes")

    def submit(self, request: JobRequest, by: Submitter = ROOT_SUBMITTER,
               describe: bool = True) -> Job:
        """Submit REQUEST; a USER's job runs as that Unix user, in a directory of its own
        (0700) and with its home. Without DESCRIBE the job is returned as submitted,
        without asking Slurm again (the API's path)."""
        return self._submit(request, by, describe, None)

    def submit_once(self, request: JobRequest, by: Submitter, key: str) -> tuple[Job, bool]:
        """Submit with an idempotency KEY (the API's Idempotency-Key header): the same key
        from the same token within 24 h gives the job of the first submission. Returns the
        job and whether it was made now (False: a replay)."""
        for _ in range(2):
            existing = self.submissions.by_key(by.token, key)
            if existing is not None:
                job = self._replay(existing)
                if job is not None:
                    return job, False
                continue  # the earlier attempt never reached Slurm: forgotten, try anew
            try:
                return self._submit(request, by, False, key), True
            except KeyInUse as exc:  # a concurrent request with the same key won the race
                job = self._replay(exc.existing)
                if job is not None:
                    return job, False
        raise InFlight(f"a submission with Idempotency-Key {key!r} is still in flight",
                       hint="retry in a few seconds with the same key")

    def _replay(self, sub: Submission) -> Job | None:
        """The job of an earlier submission with the same key; None if that submission
        never reached Slurm (then it is forgotten). Raises JobError while it may still."""
        job_id = sub.job_id
        if job_id is None:  # its process died between sbatch and the record: ask Slurm
            found = [j for j, uid in self.slurm.submissions().get(sub.sub, []) if uid == sub.uid]
            if found:
                job_id = min(found)
                self.submissions.accepted(sub.sub, job_id)
            elif time.time() - sub.created > IN_FLIGHT:
                self.submissions.forget(sub.sub)
                return None
            else:
                raise InFlight("a submission with this Idempotency-Key is still in flight",
                               hint="retry in a few seconds with the same key")
        return self._as_submitted(job_id, sub)

    def _as_submitted(self, job_id: int, sub: Submission) -> Job:
        record = self.store.job(self.cluster, job_id)
        try:
            return self.get(job_id)
        except JobError:
            return Job(job_id, "", JobState.UNKNOWN, "", "", "", 0, 0, "", sub.created, 0.0,
                       0.0, 0, record.stdout if record else "",
                       record.workdir if record else "", uid=sub.uid)

    def _submit(self, request: JobRequest, by: Submitter, describe: bool,
                key: str | None) -> Job:
        self._check(request)
        account = users.ensure_user(by.user, self.layout.homes) if by.user else None
        if account is not None:
            self.associations.ensure(account.pw_name)
        who = Who(by.user, by.admin) if by.user else ROOT
        transfers = staging.parse(request.stage_in, request.stage_out, request.exe)
        if transfers:
            transfers = staging.check(self.blobs(), ContainerAccess(self.store, self.cluster),
                                      who, transfers)
        sub = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        workdir = f"/shared/jobs/{sub}"
        host_dir = self.layout.shared / "jobs" / sub
        host_dir.mkdir(mode=0o700)
        uid, gid = (account.pw_uid, account.pw_gid) if account else (0, 0)
        script_name = f"{request.name}.sh"
        script = host_dir / script_name
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
        with os.fdopen(fd, "w") as fh:
            fh.write(request.script)
        os.chown(script, uid, gid)
        marks = host_dir / ".cloudhpc"  # the wrapper's marks (made here: no mkdir per job)
        marks.mkdir(mode=0o700)
        os.chown(marks, uid, gid)
        os.chown(host_dir, uid, gid)
        meta = self.layout.jobs_meta / sub

        def undo() -> None:
            shutil.rmtree(host_dir, ignore_errors=True)
            shutil.rmtree(meta, ignore_errors=True)

        try:  # cloudhpc's record of the job: root's, readable by the job's group
            meta.mkdir(mode=0o750)
            os.chown(meta, 0, gid)
            stage = None
            if transfers:
                stage = staging.write(self.layout, self.blobs(), transfers, meta, uid, gid,
                                      who, by.token, request.time_limit)
            path = wrapper.write(meta, wrapper.render(script_name, request.script, workdir,
                                                      stage), gid)
            batch = f"/shared/{path.relative_to(self.layout.shared)}"
        except BaseException:
            undo()
            raise
        stdout = f"{workdir}/slurm-%j.out"
        # append: a launch after a crash must not wipe the output of the job's run
        options = [f"--chdir={workdir}", f"--output={stdout}", "--open-mode=append",
                   f"--job-name={request.name}"]
        for flag, value in (("nodes", request.nodes), ("ntasks-per-node",
                                                        request.ntasks_per_node),
                            ("partition", request.partition), ("time", request.time_limit)):
            if value:
                options.append(f"--{flag}={value}")
        # cloudhpc's submission id goes into Slurm with the job (a user's staged job: the
        # prefix that makes slurmctld's prolog create its blob tokens at its start)
        staged_user = bool(transfers) and staging.needs_grant(who, self.blobs())
        options.append(f"--comment={GRANT_PREFIX if staged_user else COMMENT_PREFIX}{sub}")
        if account is not None:
            home = f"{users.HOME}/{account.pw_name}"
            options += [f"--uid={account.pw_uid}", f"--gid={account.pw_gid}",
                        f"--export=ALL,HOME={home},USER={account.pw_name},"
                        f"LOGNAME={account.pw_name}"]
        try:  # durable before sbatch: the reconciler recovers a lost job by its sub
            self.submissions.record(sub, uid, by.token, key, [*options, batch])
        except BaseException:
            undo()
            raise
        try:
            job_id = self._sbatch(options, batch, sub, uid)
        except CommandError as exc:
            self.submissions.forget(sub)
            undo()
            msg = exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else str(exc)
            raise JobError(f"Slurm refused the job: {msg}",
                           hint="check the node and task counts against `cloudhpc status`"
                           ) from None
        out_path = stdout.replace("%j", str(job_id))
        self.submissions.accepted(sub, job_id, JobRecord(job_id, script_name, workdir,
                                                         out_path, time.time(), uid, by.token))
        self.events.emit(EventKind.JOB_SUBMITTED, job=job_id, sub=sub, script=script_name,
                         partition=request.partition or "", nodes=request.nodes or 1)
        if not describe:
            default = next(p.name for p in self.plan.partitions if p.default)
            return Job(job_id, request.name, JobState.PENDING, "",
                       request.partition or default, "", request.nodes or 1, 0,
                       by.user or "root", time.time(), 0.0, 0.0, 0, out_path, workdir,
                       uid=uid)
        return self.get(job_id)

    def _sbatch(self, options: list[str], batch: str, sub: str, uid: int) -> int:
        """sbatch, again while slurmctld or munge is restarting (a second or two after a
        crash). Safe: before each retry Slurm is asked for a job with this submission's id,
        in case the refused-looking attempt reached it."""
        deadline = time.monotonic() + SBATCH_RETRY_FOR
        delay = 0.25
        while True:
            try:
                return self.slurm.sbatch(options, batch)
            except CommandError as exc:
                if not any(t in exc.stderr for t in TRANSIENT) or \
                        time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                found = [j for j, u in self.slurm.submissions().get(sub, []) if u == uid]
            except CommandError:
                found = []
            if found:
                return min(found)

    # -- queries --------------------------------------------------------------------------
    def jobs(self, include_history: bool = False) -> list[Job]:
        current = {j.job_id: j for j in map(from_squeue, self.slurm.jobs())}
        if include_history:
            for job in self._history():
                current.setdefault(job.job_id, job)
        return sorted(current.values(), key=lambda j: j.job_id)

    def _history(self, job_id: int | None = None) -> list[Job]:
        """Finished jobs from Slurm's jobcomp record. A record's owner is believed only
        where cloudhpc has none of its own and the file does not contradict itself
        (slurm.client.parse_jobcomp)."""
        records = parse_jobcomp(self.finished.text(job_id))
        owners = self.store.job_owners(self.cluster) if records else {}
        return [from_keyvalues(r.line, owners.get(r.job_id, r.uid)) for r in records]

    def get(self, job_id: int) -> Job:
        if job_id < 1:
            raise JobError(f"no job {job_id} in cluster '{self.cluster}'",
                           hint="job ids are whole numbers from 1; see `cloudhpc jobs`")
        return self._with_cost(self._with_staging(self._get(job_id)))

    def _with_cost(self, job: Job) -> Job:
        """Node-seconds and estimated cost of a finished job: from Slurm's accounting (the
        seconds it held its nodes, as `cloudhpc report` sums them), or, with accounting off
        or not answering, from its start and end times; priced by its nodes' sizes."""
        if not job.done or not job.nodes or not job.start_time or \
                job.end_time < job.start_time:
            return job
        if self.plan.accounting.enabled:
            try:
                # its end recorded (slurmdbd hears of it a moment after the job is done)
                found = [r for r in self.slurm.usage("", "", job_id=job.job_id)
                         if r.job_id == job.job_id and r.uid == job.uid
                         and r.state not in ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED")]
            except CommandError:
                found = []
            if found:
                use = job_usage(found[-1], self.plan)
                return dataclasses.replace(job, node_seconds=float(use.node_seconds),
                                           cost_usd=round(use.cost, 8))
        sizes = []
        for name in hostlist.expand_hostlist(job.nodes):
            node = self.plan.node(name)
            if node is not None and node.size:
                sizes.append(node.size)
        node_seconds, usd = job_cost(sizes, job.end_time - job.start_time)
        return dataclasses.replace(job, node_seconds=node_seconds, cost_usd=usd)

    def _with_staging(self, job: Job) -> Job:
        """Add what staging did (JOBDIR/.cloudhpc/status.json, read as the job's user) and
        its failure as the reason."""
        owner = _owner(job)
        if not job.workdir.startswith("/shared/jobs/") or owner is None:
            return job
        record = self.layout.jobs_meta / Path(job.workdir).name / "staging.json"
        if not record.exists():  # not staged (cloudhpc's own record: root's, no user's link)
            return job
        status = read_status(self.run_on_head, owner[0], owner[1],
                             f"{job.workdir}/.cloudhpc/status.json")
        if not status:
            return job
        errors = [str(p["error"]) for p in (status.get("in", {}), status.get("out", {}))
                  if "error" in p]
        reason = "; ".join(errors) if errors else job.reason
        return dataclasses.replace(job, staging=status, reason=reason)

    def _end_reason(self, job_id: int) -> str:
        """Slurm's reason for a job's end, as the reconciler saw it in the queue (the
        record of finished jobs has none)."""
        ended = [e for e in self.events.read(kinds={EventKind.JOB_ENDED})
                 if e.get("job") == job_id and e.get("reason")]
        return str(ended[-1]["reason"]) if ended else ""

    def provider_errors(self, partition: str) -> list[str]:
        """Recent capacity or launch failures of the node sets serving a partition."""
        sets = {s.name for s in self.plan.nodesets if s.partition == partition}
        since = time.time() - 600
        causes = [e.get("cause", "") for e in self.events.read(since, {EventKind.NODE_FAILED})
                  if e.get("nodeset") in sets]
        return list(dict.fromkeys(c for c in causes if c))

    def _get(self, job_id: int) -> Job:
        record = self.store.job(self.cluster, job_id)
        row = self.slurm.job(job_id)
        if row is not None and record is not None and \
                row.get("current_working_directory") not in ("", record.workdir):
            # never one job's data under another's id (ids do not go back after a crash:
            # cloudhpc.slurm.jobids; this guards what came before)
            raise JobError(f"job id {job_id} was given to two jobs by Slurm",
                           hint="see `cloudhpc jobs`; this job's directory is "
                           f"{record.workdir}")
        if row is not None:
            job = from_squeue(row)
            if record is not None:  # cloudhpc's own record of its paths and owner
                job = dataclasses.replace(job, stdout=record.stdout, workdir=record.workdir,
                                          uid=record.uid)
            if job.state is JobState.PENDING or job.reason:
                errors = self.provider_errors(job.partition)
                if errors and job.state in (JobState.PENDING, JobState.UNKNOWN):
                    reason = f"{job.reason}; provider: {errors[-1]}" if job.reason \
                        else errors[-1]
                    job = dataclasses.replace(job, reason=reason)
            return job
        for job in self._history(job_id):
            if job.job_id == job_id:
                if not job.reason and job.state is not JobState.COMPLETED:
                    job = dataclasses.replace(job, reason=self._end_reason(job_id))
                if record:
                    return dataclasses.replace(job, stdout=record.stdout,
                                               workdir=record.workdir, uid=record.uid)
                return job
        sub = self.submissions.by_job(job_id)
        if sub is not None and sub.resubmitted_as not in (None, job_id):
            assert sub.resubmitted_as is not None
            return self._get(sub.resubmitted_as)  # lost in a crash, submitted again
        if sub is not None:
            # accepted by us, unknown to Slurm: lost in a slurmctld crash, about to be
            # submitted again by the reconciler
            return Job(job_id, record.script.removesuffix(".sh") if record else "",
                       JobState.UNKNOWN,
                       "slurmctld lost this job in a crash; it is being resubmitted",
                       "", "", 0, 0, "", sub.created, 0, 0, 0, "", "", uid=sub.uid)
        raise JobError(f"no job {job_id} in cluster '{self.cluster}'",
                       hint="see `cloudhpc jobs`")

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        return wait_until_done(self.get, job_id, timeout)

    def logs(self, job_id: int) -> str:
        """The job's output, read with its owner's privileges (the file is in the user's
        directory and may be a link the job planted)."""
        job = self.get(job_id)  # paths from cloudhpc's record when it has one
        if not job.stdout:
            raise JobError(f"job {job_id} has no recorded output file", hint="")
        owner = _owner(job)
        text = None if owner is None else \
            read_as(self.run_on_head, owner[0], owner[1], job.stdout)
        if text is None:
            if not job.done and job.start_time == 0:
                return ""
            raise JobError(f"output of job {job_id} not found at {job.stdout}",
                           hint="it may have been deleted, or written on a node-local path")
        return text

    def cancel(self, job_id: int) -> None:
        job = self.get(job_id)
        if job.done:
            raise JobError(f"job {job_id} already ended ({job.state.value})", hint="")
        self.slurm.cancel(job_id)


def _owner(job: Job) -> tuple[int, int] | None:
    try:
        entry = pwd.getpwuid(job.uid)
    except (KeyError, OverflowError):
        return None
    return entry.pw_uid, entry.pw_gid

