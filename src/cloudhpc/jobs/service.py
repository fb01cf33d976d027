"""Job operations straight through Slurm: submit (into a per-submission directory under
/shared), list, show, wait, logs, cancel."""

from __future__ import annotations

import dataclasses
import os
import pwd
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import hostlist

from cloudhpc.cost import job_cost
from cloudhpc.errors import CommandError, JobError
from cloudhpc.jobs import staging, users
from cloudhpc.jobs.files import read_as, read_status
from cloudhpc.jobs.model import Job, JobState, from_keyvalues, from_squeue
from cloudhpc.slurm.client import parse_jobcomp
from cloudhpc.slurm.conf import GRANT_PREFIX, SlurmPaths
from cloudhpc.state import JobRecord
from cloudhpc.storage.access import ROOT, ContainerAccess, Who
from cloudhpc.storage.urls import StageIn, StageOut

if TYPE_CHECKING:
    from cloudhpc.cluster import Cluster


def _check_request(cluster: Cluster, script: Path, nodes: int | None,
                   ntasks_per_node: int | None, partition: str | None) -> None:
    if not script.is_file():
        raise JobError(f"job script not found: {script}", hint="give the path of a batch script")
    parts = {p.name: p for p in cluster.plan.partitions}
    if partition is not None and partition not in parts:
        raise JobError(f"no partition '{partition}' in cluster '{cluster.name}'",
                       hint=f"partitions: {', '.join(parts)}")
    part = parts[partition] if partition else next(p for p in parts.values() if p.default)
    if nodes is not None and not 1 <= nodes <= len(part.nodes):
        raise JobError(f"--nodes {nodes} is not possible in partition '{part.name}' "
                       f"(it has at most {len(part.nodes)} nodes)",
                       hint=f"ask for 1 to {len(part.nodes)} nodes")
    if ntasks_per_node is not None and ntasks_per_node < 1:
        raise JobError("--ntasks-per-node must be at least 1", hint="e.g. --ntasks-per-node 2")


def submit(cluster: Cluster, script: Path, *, nodes: int | None, ntasks_per_node: int | None,
           partition: str | None, name: str | None, wait: bool,
           timeout: float | None, stage_in: Sequence[str | StageIn] = (),
           stage_out: Sequence[str | StageOut] = (), exe: Sequence[str] = (),
           user: str | None = None, describe: bool = True, admin: bool = False,
           token: str = "", time_limit: int | None = None) -> Job:
    """Submit SCRIPT; with USER (the API's callers) the job runs as that Unix user, in a
    directory of its own (0700) and with its home. Without DESCRIBE the job is returned as
    submitted, without asking Slurm again (the API's path)."""
    _check_request(cluster, script, nodes, ntasks_per_node, partition)
    if time_limit is not None and time_limit < 1:
        raise JobError("--time-limit must be at least 1 minute", hint="e.g. --time-limit 30")
    account = users.ensure_user(user, cluster.dir.homes) if user else None
    who = Who(user, admin) if user else ROOT
    transfers = staging.parse(stage_in, stage_out, exe)
    if transfers:
        transfers = staging.check(cluster.storage, ContainerAccess(cluster.store, cluster.name),
                                  who, transfers)
    sub = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    workdir = f"/shared/jobs/{sub}"
    host_dir = cluster.dir.shared / "jobs" / sub
    host_dir.mkdir(mode=0o700)
    uid, gid = (account.pw_uid, account.pw_gid) if account else (0, 0)
    shutil.copyfile(script, host_dir / script.name)
    os.chmod(host_dir / script.name, 0o755)
    os.chown(host_dir / script.name, uid, gid)
    os.chown(host_dir, uid, gid)
    batch = f"{workdir}/{script.name}"
    meta = cluster.dir.jobs_meta / sub
    try:
        if transfers:
            wrapper = staging.write(cluster.dir, cluster.storage, transfers, script, meta,
                                    workdir, uid, gid, who, token, time_limit)
            batch = f"/shared/{wrapper.relative_to(cluster.dir.shared)}"
    except BaseException:
        shutil.rmtree(host_dir, ignore_errors=True)
        shutil.rmtree(meta, ignore_errors=True)
        raise
    stdout = f"{workdir}/slurm-%j.out"
    options = [f"--chdir={workdir}", f"--output={stdout}",
               f"--job-name={name or script.stem}"]
    if nodes:
        options.append(f"--nodes={nodes}")
    if ntasks_per_node:
        options.append(f"--ntasks-per-node={ntasks_per_node}")
    if partition:
        options.append(f"--partition={partition}")
    if time_limit:
        options.append(f"--time={time_limit}")
    if transfers and who != ROOT:  # its blob tokens are made when it starts
        options.append(f"--comment={GRANT_PREFIX}{sub}")
    if account is not None:
        home = f"{users.HOME}/{account.pw_name}"
        options += [f"--uid={account.pw_uid}", f"--gid={account.pw_gid}",
                    f"--export=ALL,HOME={home},USER={account.pw_name},"
                    f"LOGNAME={account.pw_name}"]
    try:
        job_id = cluster.slurm.sbatch(options, batch)
    except CommandError as exc:
        shutil.rmtree(host_dir, ignore_errors=True)
        shutil.rmtree(meta, ignore_errors=True)
        msg = exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else str(exc)
        raise JobError(f"Slurm refused the job: {msg}",
                       hint="check the node and task counts against `cloudhpc status`") from None
    cluster.store.add_job(cluster.name, JobRecord(job_id, script.name, workdir,
                                                  stdout.replace("%j", str(job_id)),
                                                  time.time(), uid, token))
    # the full request, so that the reconciler can resubmit a job slurmctld lost in a crash
    cluster.events.emit("job_submitted", job=job_id, script=script.name,
                        partition=partition or "", nodes=nodes or 1,
                        argv=[*options, batch])
    if wait:
        return wait_for(cluster, job_id, timeout)
    if not describe:
        default = next(p.name for p in cluster.plan.partitions if p.default)
        return Job(job_id, name or script.stem, JobState.PENDING, "", partition or default, "",
                   nodes or 1, 0, user or "root", time.time(), 0.0, 0.0, 0,
                   stdout.replace("%j", str(job_id)), workdir, uid=uid)
    return get_job(cluster, job_id)


def list_jobs(cluster: Cluster, include_history: bool = False) -> list[Job]:
    current = {j.job_id: j for j in map(from_squeue, cluster.slurm.jobs())}
    if include_history:
        for job in _history(cluster):
            current.setdefault(job.job_id, job)
    return sorted(current.values(), key=lambda j: j.job_id)


def _history(cluster: Cluster, job_id: int | None = None) -> list[Job]:
    """Finished jobs from Slurm's jobcomp record. A record's owner is believed only where
    cloudhpc has none of its own and the file does not contradict itself
    (slurm.client.parse_jobcomp)."""
    path = Path(SlurmPaths(str(cluster.dir.root)).jobcomp)
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    if job_id is not None:  # a text search first, not a parse of every record
        needle = f"JobId={job_id} "
        text = "\n".join(line for line in text.splitlines() if line.startswith(needle))
    records = parse_jobcomp(text)
    owners = cluster.store.job_owners(cluster.name) if records else {}
    return [from_keyvalues(r.line, owners.get(r.job_id, r.uid)) for r in records]


def get_job(cluster: Cluster, job_id: int) -> Job:
    if job_id < 1:
        raise JobError(f"no job {job_id} in cluster '{cluster.name}'",
                       hint="job ids are whole numbers from 1; see `cloudhpc jobs`")
    return _with_cost(cluster, _with_staging(cluster, _get_job(cluster, job_id)))


def _with_cost(cluster: Cluster, job: Job) -> Job:
    """Node-seconds and estimated cost of a finished job, from its nodes' sizes."""
    if not job.done or not job.nodes or not job.start_time or job.end_time < job.start_time:
        return job
    sizes = []
    for name in hostlist.expand_hostlist(job.nodes):
        node = cluster.plan.node(name)
        if node is not None and node.size:
            sizes.append(node.size)
    node_seconds, usd = job_cost(sizes, job.end_time - job.start_time)
    return dataclasses.replace(job, node_seconds=node_seconds, cost_usd=usd)


def _owner(job: Job) -> tuple[int, int] | None:
    try:
        entry = pwd.getpwuid(job.uid)
    except (KeyError, OverflowError):
        return None
    return entry.pw_uid, entry.pw_gid


def _with_staging(cluster: Cluster, job: Job) -> Job:
    """Add what staging did (JOBDIR/.cloudhpc/status.json, read as the job's user) and its
    failure as the reason."""
    owner = _owner(job)
    if not job.workdir.startswith("/shared/jobs/") or owner is None:
        return job
    record = cluster.dir.jobs_meta / Path(job.workdir).name / "staging.json"
    if not record.exists():  # not staged (cloudhpc's own record: root's, no user's link)
        return job
    status = read_status(cluster.exec_head_unchecked, owner[0], owner[1],
                         f"{job.workdir}/.cloudhpc/status.json")
    if not status:
        return job
    errors = [str(p["error"]) for p in (status.get("in", {}), status.get("out", {}))
              if "error" in p]
    reason = "; ".join(errors) if errors else job.reason
    return dataclasses.replace(job, staging=status, reason=reason)


def _get_job(cluster: Cluster, job_id: int) -> Job:
    record = cluster.store.job(cluster.name, job_id)
    row = cluster.slurm.job(job_id)
    if row is not None:
        job = from_squeue(row)
        if record is not None:  # cloudhpc's own record of its paths and owner
            job = dataclasses.replace(job, stdout=record.stdout, workdir=record.workdir,
                                      uid=record.uid)
        if job.state is JobState.PENDING or job.reason:
            errors = cluster.provider_errors(job.partition)
            if errors and job.state in (JobState.PENDING, JobState.UNKNOWN):
                reason = f"{job.reason}; provider: {errors[-1]}" if job.reason else errors[-1]
                job = dataclasses.replace(job, reason=reason)
        return job
    for job in _history(cluster, job_id):
        if job.job_id == job_id:
            if record:
                return dataclasses.replace(job, stdout=record.stdout, workdir=record.workdir,
                                           uid=record.uid)
            return job
    events = cluster.events.read(kinds={"job_resubmitted", "job_submitted"})
    for event in events:
        if event["kind"] == "job_resubmitted" and event["job"] == job_id \
                and event["new_job"] != job_id:
            return _get_job(cluster, event["new_job"])
    for event in events:
        if event["kind"] == "job_submitted" and event["job"] == job_id:
            # accepted by us, unknown to Slurm: lost in a slurmctld crash, about to be
            # resubmitted by the reconciler
            return Job(job_id, event.get("script", ""), JobState.UNKNOWN,
                       "slurmctld lost this job in a crash; it is being resubmitted",
                       event.get("partition", ""), "", 0, 0, "", event["time"], 0, 0, 0, "",
                       "", uid=record.uid if record else -1)
    raise JobError(f"no job {job_id} in cluster '{cluster.name}'", hint="see `cloudhpc jobs`")


def wait_for(cluster: Cluster, job_id: int, timeout: float | None = None) -> Job:
    deadline = time.monotonic() + timeout if timeout else None
    delay = 0.05
    while True:
        job = get_job(cluster, job_id)
        if job.done:
            return job
        if deadline and time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {job.state.value} after {timeout:.0f} s"
                           + (f" ({job.reason})" if job.reason else ""),
                           hint=f"check it with `cloudhpc job {job_id}`")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


wait = wait_for


def logs(cluster: Cluster, job_id: int) -> str:
    """The job's output, read with its owner's privileges (the file is in the user's
    directory and may be a link the job planted)."""
    job = get_job(cluster, job_id)  # paths from cloudhpc's record when it has one
    if not job.stdout:
        raise JobError(f"job {job_id} has no recorded output file", hint="")
    owner = _owner(job)
    text = None if owner is None else \
        read_as(cluster.exec_head_unchecked, owner[0], owner[1], job.stdout)
    if text is None:
        if not job.done and job.start_time == 0:
            return ""
        raise JobError(f"output of job {job_id} not found at {job.stdout}",
                       hint="it may have been deleted, or written on a node-local path")
    return text


def cancel(cluster: Cluster, job_id: int) -> None:
    job = get_job(cluster, job_id)
    if job.done:
        raise JobError(f"job {job_id} already ended ({job.state.value})", hint="")
    cluster.slurm.cancel(job_id)
