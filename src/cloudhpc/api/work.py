"""The API's requests that reach Slurm (submit, show a job, its logs, cancel) run in worker
processes, not in threads of the API process: each one spawns Slurm commands and runs a good
deal of Python, and in threads that Python holds the API process's GIL while readers wait
(with ten clients submitting, reads of the cached view had a p99 of 0.7 s; bench/api_load.py).
The event loop only awaits the worker's answer.

A worker that dies (killed, out of memory) is replaced for the next request; the request it
was serving gets a 503, and a submission is accepted only when its answer (the job Slurm
accepted) came back."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from cloudhpc.cluster import Cluster
from cloudhpc.errors import CloudHPCError, CommandError, JobError
from cloudhpc.jobs.model import Job
from cloudhpc.jobs.request import JobRequest
from cloudhpc.jobs.service import InFlight, Submitter

WORKERS = 2


class WorkerError(CloudHPCError):
    """An error a worker raised, with the HTTP status the API answers it with."""

    def __init__(self, message: str, hint: str = "", status: int = 400) -> None:
        super().__init__(message, hint)
        self.status = status


# -- in the worker process -------------------------------------------------------------------
_cluster: list[Cluster] = []


NICE = 5  # workers and the Slurm commands they run yield the CPU to the readers' process


def _init(home: str, name: str, on_head: bool) -> None:
    from cloudhpc.cluster import Cluster
    from cloudhpc.state import Store

    os.nice(NICE)

    store = Store(Path(home) / "state.db")
    record = store.cluster(name)
    if record is None:
        raise SystemExit(f"no cluster {name} in {home}")
    _cluster.append(Cluster(record, store, on_head=on_head))


def _submit(cluster: Cluster, request: JobRequest, user: str, admin: bool, token: str) -> Job:
    return cluster.service.submit(request, Submitter(user, admin, token), describe=False)


def _submit_once(cluster: Cluster, request: JobRequest, user: str, admin: bool, token: str,
                 key: str) -> tuple[Job, bool]:
    return cluster.service.submit_once(request, Submitter(user, admin, token), key)


def _job(cluster: Cluster, job_id: int) -> Job | None:
    try:
        return cluster.job(job_id)
    except JobError:
        return None


def _logs(cluster: Cluster, job_id: int) -> str:
    return cluster.logs(job_id)


def _cancel(cluster: Cluster, job_id: int) -> None:
    cluster.cancel(job_id)


CALLS: dict[str, Callable[..., Any]] = {"submit": _submit, "submit_once": _submit_once,
                                        "job": _job, "logs": _logs, "cancel": _cancel}


def _run(call: str, args: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        return "ok", CALLS[call](_cluster[0], *args)
    except CloudHPCError as exc:  # sent back as data: its class need not pickle
        status = 503 if isinstance(exc, CommandError) else 409 if isinstance(exc, InFlight) \
            else 400
        return "error", (exc.message, exc.hint, status)


# -- in the API process -------------------------------------------------------------------
class Workers:
    def __init__(self, cluster: Cluster, processes: int = WORKERS) -> None:
        self.cluster = cluster
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init, initargs=(str(self.cluster.store.path.parent),
                                         self.cluster.name, self.cluster.on_head))

    def start(self) -> None:
        """The workers start at the first request that needs one (each imports cloudhpc:
        about a second of CPU), so an idle cluster's API costs nothing for them."""
        self._pool = self._new_pool()

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def call(self, call: str, *args: Any) -> Any:
        if self._pool is None:
            self.start()
        pool = self._pool
        assert pool is not None
        try:
            kind, value = await asyncio.wrap_future(pool.submit(_run, call, args))
        except BrokenProcessPool:
            if self._pool is pool:  # the first to notice replaces it
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise WorkerError("the API's worker process died while serving this request",
                              hint="retry; `cloudhpc jobs` shows whether a submission "
                              "reached Slurm", status=503) from None
        if kind == "error":
            message, hint, status = value
            raise WorkerError(message, hint, status)
        return value
