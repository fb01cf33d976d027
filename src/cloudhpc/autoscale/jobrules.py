"""The reconciler's job rules: pure functions of what Slurm and the event log show, returning
what to do. Each rule says why it exists; tests/unit/test_reconciler.py holds them as tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cloudhpc.slurm.client import PendingJob, SlurmNode

DUPLICATE = "Duplicate jobid"
LAUNCH_HELD = "launch failed requeued held"
# a job held after a failed launch is released while Slurm has restarted it fewer times
# than this: a launch that fails every time then stays held, with Slurm's reason
LAUNCH_RESTARTS = 5


@dataclass(frozen=True)
class Submitted:
    """A submission cloudhpc recorded (jobs.submissions): its id, owner, the job id Slurm
    gave it (None: never accepted) and the full sbatch request."""

    sub: str
    uid: int
    job_id: int | None
    argv: tuple[str, ...]
    resubmitted_as: int | None = None


@dataclass(frozen=True)
class Release:
    job_id: int
    unhold: bool  # `scontrol release` before letting it start
    cause: str


def lost_jobs(submitted: Iterable[Submitted], in_slurm: dict[str, list[tuple[int, int]]],
              finished: set[int]) -> list[Submitted]:
    """Submissions to make again after slurmctld restarted: Slurm saves its state a few
    seconds after accepting a job, so a crash in that window forgets it. A submission is
    found by its own id, not by the job id: a job whose comment carries the id and whose
    uid is the submission's (IN_SLURM: id -> [(job, uid)]; the comment alone is the user's
    to change), or a job id of it (first or resubmitted) in the record of finished jobs
    (ids never go back: cloudhpc.slurm.jobids). A submission Slurm never accepted (no job
    id) was never reported accepted: its client retries with its Idempotency-Key."""
    out = []
    for s in submitted:
        if s.job_id is None or not s.argv:
            continue
        if any(uid == s.uid for _, uid in in_slurm.get(s.sub, [])):
            continue
        if s.job_id in finished or (s.resubmitted_as is not None
                                    and s.resubmitted_as in finished):
            continue
        out.append(s)
    return out


def jobs_to_release(pending: Sequence[PendingJob]) -> list[Release]:
    """Requeued jobs to let run now.

    Slurm requeues a job whose node failed (down, or never powered up) with a begin time
    minutes away; cloudhpc has already replaced or taken out that node, so the job may run
    now. Its restart count tells it from a job a user gave --begin (no restarts).

    A launch that meets a run of the same job on its node is refused, and slurmd has Slurm
    requeue the job held ('launch failed requeued held'), the run going on or not. It
    happens when slurmctld relaunches a job after a crash while its first run goes on, and
    when a retry of a launch to a node whose slurmd restarted arrives after the job was
    requeued and started there again. The job is released: its wrapper waits for a run
    still going on and does not run again a script that ended (cloudhpc.jobs.wrapper), so
    the job ends with its one run's exit code. A job restarted LAUNCH_RESTARTS times stays
    held: its launch fails for another reason."""
    out = []
    for job in pending:
        if job.reason.startswith(LAUNCH_HELD) and job.restarts < LAUNCH_RESTARTS:
            out.append(Release(job.job_id, True, job.reason))
        elif job.reason == "BeginTime" and job.restarts > 0:
            out.append(Release(job.job_id, False, job.reason))
    return out


def nodes_to_resume(nodes: Sequence[SlurmNode]) -> list[SlurmNode]:
    """A node slurmctld drained because a launch met a run of the same job there
    ('Duplicate jobid', see jobs_to_release) is healthy: slurmd refused the second copy.
    Any other drain is an admin's or another rule's."""
    return [n for n in nodes if "DRAIN" in n.flags and n.reason.startswith(DUPLICATE)]


@dataclass(frozen=True)
class JobEvent:
    kind: str  # "started" or "ended"
    job_id: int
    fields: tuple[tuple[str, object], ...] = ()


def job_events(running: set[int], started: set[int],
               finished: Sequence[tuple[int, dict[str, object]]]
               ) -> tuple[list[JobEvent], set[int]]:
    """Events for jobs seen running for the first time and jobs that ended (FINISHED: job id
    and the fields of its end), and the set of jobs now known to have started. A job that
    ended between two looks gets its start too (with the time Slurm recorded)."""
    events = [JobEvent("started", j) for j in sorted(running - started)]
    now_started = started | running
    for job_id, fields in finished:
        if job_id not in now_started:
            events.append(JobEvent("started", job_id, (("at", fields.get("start_time")),)))
        now_started.discard(job_id)
        events.append(JobEvent("ended", job_id, tuple(sorted(
            (k, v) for k, v in fields.items() if k != "start_time"))))
    return events, now_started
