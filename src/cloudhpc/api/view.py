"""The API's cached view of its cluster. Reads never reach Slurm: a worker process refreshes
the view from Slurm's output (`squeue -O`, sinfo --json via the cluster's status), the
jobcomp record of finished jobs and the event log, at most once a second while someone reads
(every 10 s otherwise, and slower when a refresh itself takes longer, as with 10,000 jobs).
The worker hands back every job already serialised, so requests only slice and join bytes
and the parsing of a big queue never stalls them. It also samples nodes up per node set and
the queue depth for the dashboard's plots."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import statistics
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from cloudhpc.api.work import NICE
from cloudhpc.cluster import Cluster
from cloudhpc.errors import CloudHPCError
from cloudhpc.jobs.model import Job, from_keyvalues

SAMPLES = 1800  # 1 h at one sample every 2 s
HISTORY = 20000  # finished jobs kept in the view
FIRST_WAIT = 60.0  # seconds a reader waits for the first view at the API's start


# (user, state, done, uid) of a job: a plain tuple, because the snapshot crosses from the
# worker process in a pickle, and 11,000 tuples unpickle in 0.3 ms against 5 ms for
# dataclasses (time during which the API process holds its GIL and answers nobody). Access is
# decided by UID: Slurm's numeric uid from the queue (slurm.client: no job name can forge a
# record), or cloudhpc's own record; -1 when neither knows (such a job is admins' only).
JobMeta = tuple[str, str, bool, int]
USER: Final = 0
STATE: Final = 1
UID: Final = 3


@dataclass(frozen=True)
class Snapshot:
    taken: float = 0.0
    meta: dict[int, JobMeta] = field(default_factory=dict)
    json: dict[int, bytes] = field(default_factory=dict)  # each job as JSON
    order: list[int] = field(default_factory=list)  # newest first
    nodes: list[dict[str, Any]] = field(default_factory=list)
    slurm_ok: bool = False
    error: str = ""
    by_state: dict[str, list[int]] = field(default_factory=dict)  # newest first
    nodes_json: bytes = b"[]"


def _job_json(job: Job) -> bytes:
    data = asdict(job)
    data["state"] = job.state.value
    return json.dumps(data, separators=(",", ":")).encode()


# -- the worker process -------------------------------------------------------------------
_worker: dict[str, Any] = {}


def _worker_refresh(home: str, name: str, on_head: bool = False) -> Snapshot:
    """Runs in the worker process: build a snapshot (keeps finished jobs between calls).
    A job seen in the queue keeps the owner and final state the queue showed (Slurm keeps
    finished jobs there for MinJobAge, 300 s); the jobcomp file only fills in jobs that
    ended while nobody was watching, and its owners count only where they agree
    (slurm.client.parse_jobcomp) or cloudhpc recorded the job itself."""
    from cloudhpc.cluster import Cluster
    from cloudhpc.jobs.model import from_squeue
    from cloudhpc.slurm.client import parse_jobcomp, parse_record, split_records
    from cloudhpc.slurm.conf import SlurmPaths
    from cloudhpc.slurm.jobcomp import FinishedJobs
    from cloudhpc.state import Store

    if "cluster" not in _worker:
        os.nice(NICE)  # the refresh (and its squeue) yields the CPU to the readers' process
        store = Store(Path(home) / "state.db")
        record = store.cluster(name)
        if record is None:
            raise CloudHPCError(f"no cluster {name}")
        _worker["cluster"] = Cluster(record, store, on_head=on_head)
        _worker["finished"] = {}
        _worker["finished_jobs"] = FinishedJobs(SlurmPaths(str(_worker["cluster"].dir.root))
                                                .jobcomp)
        _worker["queue"] = {}
        _worker["owners"] = {}
        _worker["seen"] = set()  # jobs whose final state the queue showed
    cluster: Cluster = _worker["cluster"]
    from_queue: set[int] = _worker["seen"]
    finished: dict[int, tuple[JobMeta, bytes]] = _worker["finished"]
    seen_queue: dict[bytes, tuple[bytes, int, JobMeta, bytes]] = _worker["queue"]
    try:
        records = parse_jobcomp(_worker["finished_jobs"].new())
        if records:
            _worker["owners"] = cluster.store.job_owners(cluster.name)
        owners: dict[int, int] = _worker["owners"]
        queued = {hit[1] for hit in seen_queue.values()}
        for rec in records:
            if rec.job_id in queued or rec.job_id in from_queue:  # the queue's view stands
                continue
            uid = owners.get(rec.job_id, rec.uid)
            known = finished.get(rec.job_id)
            if rec.job_id not in owners and known is not None and known[0][UID] != uid:
                uid = None  # records of one job that disagree: no owner (admins only)
            job = from_keyvalues(rec.line, uid)
            finished[rec.job_id] = ((job.user, job.state.value, True, job.uid),
                                    _job_json(job))
        while len(finished) > HISTORY:
            from_queue.discard(next(iter(finished)))
            finished.pop(next(iter(finished)))
    except OSError:
        pass
    try:
        # a job whose record is the same as last time is not parsed or serialised again
        queue: dict[bytes, tuple[bytes, int, JobMeta, bytes]] = {}
        for raw in split_records(cluster.slurm.queue_bytes()):
            key = raw[:raw.find(b"\x1f")]  # the job id
            hit = seen_queue.get(key)
            if hit is None or hit[0] != raw:
                row = parse_record(raw)
                if row is None:
                    continue
                job = from_squeue(row)
                hit = (raw, job.job_id, (job.user, job.state.value, job.done, job.uid),
                       _job_json(job))
            queue[key] = hit
        # jobs that left the queue keep what the queue last showed
        for key, hit in seen_queue.items():
            if key not in queue and hit[2][2]:
                finished[hit[1]] = (hit[2], hit[3])
                from_queue.add(hit[1])
        _worker["queue"] = queue
        nodes = [n.as_dict() for n in cluster.status()]
        ok, error = True, ""
    except CloudHPCError as exc:
        queue, nodes, ok, error = seen_queue, [], False, exc.message
    meta = {k: v[0] for k, v in finished.items()}
    blobs = {k: v[1] for k, v in finished.items()}
    for hit in queue.values():
        meta[hit[1]] = hit[2]
        blobs[hit[1]] = hit[3]
    order = sorted(meta, reverse=True)
    by_state: dict[str, list[int]] = {}
    for job_id in order:
        by_state.setdefault(meta[job_id][STATE], []).append(job_id)
    return Snapshot(time.time(), meta, blobs, order, nodes, ok, error, by_state,
                    json.dumps(nodes, separators=(",", ":")).encode())


# -- in the API process ---------------------------------------------------------------------
class ClusterView:
    def __init__(self, cluster: Cluster, interval: float = 1.0, idle_interval: float = 10.0,
                 ) -> None:
        self.cluster = cluster
        self.interval = interval
        self.idle_interval = idle_interval  # nobody asked for 30 s: refresh less often
        self.last_read = 0.0
        self._snapshot = Snapshot()
        self._first = threading.Event()  # set by the first refresh
        self.samples: deque[dict[str, Any]] = deque(maxlen=SAMPLES)
        self.events: deque[dict[str, Any]] = deque(maxlen=5000)
        self._events_offset = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="view", daemon=True)
        self._pool: ProcessPoolExecutor | None = None
        self.durations: deque[float] = deque(maxlen=5)  # of the last refreshes

    @property
    def snapshot(self) -> Snapshot:
        """The last view of the cluster; until the first refresh, which the view's thread
        makes at the API's start, readers wait for it (at most FIRST_WAIT seconds)."""
        self._first.wait(FIRST_WAIT)
        return self._snapshot

    @snapshot.setter
    def snapshot(self, snap: Snapshot) -> None:
        self._snapshot = snap
        self._first.set()

    def start(self) -> None:
        """The first refresh is the view's thread's: the API listens at once, while it
        waits for its worker to start and for slurmctld (during `up`, a second or more
        after the API could listen)."""
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def touch(self) -> None:
        """A reader came: refresh at full pace for the next 30 s."""
        idle = time.monotonic() - self.last_read > 30
        self.last_read = time.monotonic()
        if idle:
            self._wake.set()

    def poke(self) -> None:
        """Something changed (a submission, a cancel): refresh now."""
        self._wake.set()

    def _run(self) -> None:
        last_sample = 0.0
        while not self._stop.is_set():
            began = time.monotonic()
            self.refresh()
            self.durations.append(time.monotonic() - began)
            if time.time() - last_sample >= 2:
                self._sample()
                last_sample = time.time()
            watched = time.monotonic() - self.last_read < 30
            pause = self.interval if watched else self.idle_interval
            # a big queue is refreshed less often; the median, so that one slow refresh (the
            # API's workers starting beside it) does not leave the view stale for long
            floor = 3 * statistics.median(self.durations)
            self._wake.clear()
            self._wake.wait(max(pause, floor))
            # woken early (a reader came, a job was submitted): still keep the floor
            left = began + max(self.interval, floor) - time.monotonic()
            if left > 0 and not self._stop.is_set():
                self._stop.wait(left)

    def refresh(self) -> None:
        events, self._events_offset = self.cluster.events.tail(self._events_offset)
        self.events.extend(events)
        try:
            if self._pool is None:
                snap = _worker_refresh(str(self.cluster.store.path.parent), self.cluster.name,
                                       self.cluster.on_head)
            else:
                snap = self._pool.submit(_worker_refresh, str(self.cluster.store.path.parent),
                                         self.cluster.name, self.cluster.on_head
                                         ).result(timeout=300)
        except Exception as exc:  # noqa: BLE001 - keep serving the last view, say why
            snap = dataclasses.replace(self._snapshot, slurm_ok=False,
                                       error=f"view refresh failed: {exc}")
        if not snap.slurm_ok and not snap.nodes:
            snap = dataclasses.replace(snap, nodes=self._snapshot.nodes,
                                       nodes_json=self._snapshot.nodes_json)
        self.snapshot = snap

    def _sample(self) -> None:
        snap = self.snapshot
        up: dict[str, int] = {}
        for node in snap.nodes:
            if node["role"] == "compute":
                alive = node["state"].split("+")[0] in ("idle", "mixed", "allocated",
                                                       "completing")
                up[node["nodeset"]] = up.get(node["nodeset"], 0) + int(alive)
        self.samples.append({"time": round(snap.taken, 1), "nodes_up": up,
                             "pending": len(snap.by_state.get("pending", [])),
                             "running": len(snap.by_state.get("running", []))})
