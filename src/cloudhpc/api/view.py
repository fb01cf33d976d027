"""The API's cached view of its cluster. Reads never reach Slurm: one thread refreshes the
view from Slurm's JSON output (squeue --json, sinfo --json), the jobcomp record of finished
jobs and the event log, at most once a second (slower when a refresh itself takes longer, as
with 10,000 jobs), and swaps in a new immutable snapshot. It also samples nodes up per node
set and the queue depth for the dashboard's plots."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudhpc.errors import CloudHPCError
from cloudhpc.jobs.model import Job, JobState, from_keyvalues
from cloudhpc.jobs.service import list_jobs
from cloudhpc.slurm.conf import SlurmPaths

if TYPE_CHECKING:
    from cloudhpc.cluster import Cluster

SAMPLES = 1800  # 1 h at one sample every 2 s
HISTORY = 20000  # finished jobs kept in the view


@dataclass(frozen=True)
class Snapshot:
    taken: float = 0.0
    jobs: dict[int, Job] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # newest first
    nodes: list[dict[str, Any]] = field(default_factory=list)
    slurm_ok: bool = False
    error: str = ""


class ClusterView:
    def __init__(self, cluster: Cluster, interval: float = 1.0, idle_interval: float = 10.0,
                 ) -> None:
        self.cluster = cluster
        self.interval = interval
        self.idle_interval = idle_interval  # nobody asked for 30 s: refresh less often
        self.last_read = 0.0
        self.snapshot = Snapshot()
        self.samples: deque[dict[str, Any]] = deque(maxlen=SAMPLES)
        self.events: deque[dict[str, Any]] = deque(maxlen=5000)
        self._finished: dict[int, Job] = {}
        self._jobcomp = SlurmPaths(str(cluster.dir.root)).jobcomp
        self._jobcomp_offset = 0
        self._events_offset = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="view", daemon=True)
        self._changed = threading.Condition()
        self.last_duration = 0.0

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wait_for_refresh(self, timeout: float = 5.0) -> None:
        """Block until the next refresh has been swapped in (after a submission)."""
        with self._changed:
            self._changed.wait(timeout)

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
            self.last_duration = time.monotonic() - began
            if time.time() - last_sample >= 2:
                self._sample()
                last_sample = time.time()
            watched = time.monotonic() - self.last_read < 30
            pause = self.interval if watched else self.idle_interval
            self._wake.clear()
            self._wake.wait(max(pause, 2 * self.last_duration))

    def _read_finished(self) -> None:
        try:
            with open(self._jobcomp, "rb") as fh:
                fh.seek(self._jobcomp_offset)
                data = fh.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self._jobcomp_offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            if line.startswith("JobId="):
                job = from_keyvalues(line)
                self._finished[job.job_id] = job
        while len(self._finished) > HISTORY:
            self._finished.pop(next(iter(self._finished)))

    def _read_events(self) -> None:
        events, self._events_offset = self.cluster.events._iter(self._events_offset, 0.0, None)
        self.events.extend(events)

    def refresh(self) -> None:
        self._read_finished()
        self._read_events()
        try:
            current = {j.job_id: j for j in list_jobs(self.cluster)}
            nodes = [n.as_dict() for n in self.cluster.status()]
            ok, error = True, ""
        except CloudHPCError as exc:
            current, nodes = {k: v for k, v in self.snapshot.jobs.items()
                              if not v.done}, self.snapshot.nodes
            ok, error = False, exc.message
        jobs = dict(self._finished)
        jobs.update(current)
        snap = Snapshot(time.time(), jobs, sorted(jobs, reverse=True), nodes, ok, error)
        self.snapshot = snap
        with self._changed:
            self._changed.notify_all()

    def _sample(self) -> None:
        snap = self.snapshot
        up: dict[str, int] = {}
        for node in snap.nodes:
            if node["role"] == "compute":
                alive = node["state"].split("+")[0] in ("idle", "mixed", "allocated",
                                                       "completing")
                up[node["nodeset"]] = up.get(node["nodeset"], 0) + int(alive)
        current = [j for j in snap.jobs.values() if not j.done]
        self.samples.append({
            "time": round(snap.taken, 1), "nodes_up": up,
            "pending": sum(1 for j in current if j.state is JobState.PENDING),
            "running": sum(1 for j in current if j.state is JobState.RUNNING)})
