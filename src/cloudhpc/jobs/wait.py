"""The one wait loop: poll a job until it ends (the job service, the remote client and the
CLI use it)."""

from __future__ import annotations

import time
from collections.abc import Callable

from cloudhpc.errors import JobError
from cloudhpc.jobs.model import Job


def wait_until_done(get: Callable[[int], Job], job_id: int, timeout: float | None = None,
                    on_change: Callable[[Job], None] | None = None,
                    first: float = 0.05, longest: float = 0.5) -> Job:
    """GET the job until it is done, backing off from FIRST to LONGEST seconds between
    looks; ON_CHANGE sees each state (a spinner). Raises JobError after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout if timeout else None
    delay = first
    while True:
        job = get(job_id)
        if on_change is not None:
            on_change(job)
        if job.done:
            return job
        if deadline and time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {job.state.value} after {timeout:.0f} s"
                           + (f" ({job.reason})" if job.reason else ""),
                           hint=f"check it with `cloudhpc job {job_id}`")
        time.sleep(delay)
        delay = min(delay * 1.5, longest)
