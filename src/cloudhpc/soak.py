"""`cloudhpc chaos soak`: random faults from the chaos catalogue at random times while a
stream of jobs is submitted through the CLI and the REST API (some with staging), then a
ledger of what became of every accepted job: completed once, failed with a reason, lost,
duplicated, shown under a wrong id. The seed fixes the faults, their times and the jobs, so
a failing soak can be run again.

Each job says who it is (its marker, printed and appended with "start"/"end" to runs.txt in
its own directory), so the ledger counts runs from the job's own directory and checks that
`logs ID` shows its own output and no other job's."""

from __future__ import annotations

import contextlib
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cloudhpc.cluster import Cluster
from cloudhpc.errors import CloudHPCError
from cloudhpc.jobs.model import Job, JobState
from cloudhpc.plan import Role
from cloudhpc.runner import Runner

SOAK_USER = "cloudhpc-soak"
CONTAINER = "cloudhpc-soak"
FAILED = {JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT, JobState.NODE_FAIL}


@dataclass
class Fault:
    at: float  # seconds into the soak
    kind: str  # kill-node or kill-daemon
    node: str
    daemon: str = ""
    done: bool = False
    error: str = ""


@dataclass
class Submitted:
    marker: str
    via: str  # cli or api
    staged: bool
    job_id: int


@dataclass
class Ledger:
    seed: int
    minutes: float
    faults: list[dict[str, Any]] = field(default_factory=list)
    submissions: int = 0  # attempts
    accepted: int = 0
    not_accepted: int = 0  # the submitter was told (an error), so not cloudhpc's to run
    completed_once: int = 0
    failed_with_reason: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong_id: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.wrong_id == 0


def catalogue(c: Cluster) -> list[tuple[str, str, str]]:
    """(kind, node, daemon) of every fault the chaos commands offer on this cluster (nodes
    that exist while the cluster is idle: a dynamic node is there only while it works)."""
    from cloudhpc.node import bootstrap

    out: list[tuple[str, str, str]] = [("kill-daemon", "control-plane", "control")]
    for node in c.plan.nodes:
        if node.dynamic:
            continue
        for daemon in bootstrap.daemons(node, c.dir):
            out.append(("kill-daemon", node.name, daemon["name"]))
        if node.role is Role.COMPUTE and not node.dynamic:
            out.append(("kill-node", node.name, ""))
    return out


def plan_faults(c: Cluster, rng: random.Random, seconds: float, rate: float) -> list[Fault]:
    """Faults at random times (RATE per minute on average, at least 2 s apart)."""
    choices = catalogue(c)
    faults, at = [], rng.uniform(2, 60 / rate)
    while at < seconds:
        kind, node, daemon = rng.choice(choices)
        faults.append(Fault(round(at, 2), kind, node, daemon))
        at += max(2.0, rng.expovariate(rate / 60))
    return faults


def _script(marker: str, seconds: float, staged: bool) -> str:
    copy = "cp in.txt out.txt\n" if staged else ""
    return (f"#!/bin/bash\necho start {marker} >> runs.txt\necho {marker}\n"
            f"sleep {seconds:.1f}\n{copy}echo end {marker} >> runs.txt\n")


class Soak:
    def __init__(self, c: Cluster, seed: int, minutes: float, rate: float,
                 say: Callable[[str], None] = lambda _: None) -> None:
        self.c = c
        self.seed = seed
        self.minutes = minutes
        self.rate = rate
        self.say = say
        self.rng = random.Random(seed)
        self.jobs: list[Submitted] = []
        self.attempts = 0
        self.refusals: dict[str, int] = {}  # why submissions were not accepted
        self.token_id = ""
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.tmp = Path(c.dir.root) / "soak" / str(seed)
        self.tmp.mkdir(parents=True, exist_ok=True)

    # -- set-up ---------------------------------------------------------------------------
    def _remote(self) -> Any:
        """A client with a token of the soak's own user; tokens of earlier soaks go first
        (each token holds one of a container's five access policies)."""
        from cloudhpc.api.client import RemoteCluster
        from cloudhpc.api.tokens import TokenStore

        tokens = TokenStore(self.c.store.path)
        for old in tokens.list(self.c.name):
            if old.user == SOAK_USER and old.revoked is None:
                self._revoke(old.id)
        info, token = tokens.create(self.c.name, SOAK_USER)
        self.token_id = info.id
        return RemoteCluster(self.c.api_url, token, timeout=30, retry_for=120)

    def _revoke(self, token_id: str) -> None:
        from cloudhpc.api.tokens import TokenStore

        TokenStore(self.c.store.path).revoke(self.c.name, token_id)
        if self.c.plan.blob:
            from cloudhpc.storage.access import revoke_token_access

            revoke_token_access(self.c, token_id)

    def _staging_ready(self) -> bool:
        if not self.c.plan.blob:
            return False
        from cloudhpc.storage.access import ContainerAccess
        from cloudhpc.storage.urls import parse_blob_url

        store = self.c.storage
        store.mkdir(CONTAINER)
        access = ContainerAccess(self.c.store, self.c.name)
        access.record(CONTAINER, SOAK_USER)
        src = self.tmp / "in.txt"
        src.write_text("soak input\n")
        store.put(src, parse_blob_url(f"blob://{CONTAINER}/in.txt"))
        return True

    def _refused(self, lines: list[str]) -> None:
        why = (lines[0] if lines else "?")[:120]
        with self.lock:
            self.refusals[why] = self.refusals.get(why, 0) + 1

    # -- the stream of jobs -----------------------------------------------------------------
    def _submit_cli(self, marker: str, seconds: float) -> int | None:
        path = self.tmp / f"{marker}.sh"
        path.write_text(_script(marker, seconds, False))
        result = Runner().run([sys.executable, "-m", "cloudhpc.cli", "submit", str(path),
                               "--nodes", "1", "--json", "-c", self.c.name],
                              check=False, timeout=120,
                              env={"CLOUDHPC_HOME": str(self.c.store.path.parent)})
        if result.returncode != 0:
            self._refused(result.stderr.strip().splitlines()[:1])
            return None
        return int(json.loads(result.stdout)["job_id"])

    def _submit_api(self, remote: Any, marker: str, seconds: float, staged: bool) -> int | None:
        path = self.tmp / f"{marker}.sh"
        path.write_text(_script(marker, seconds, staged))
        extra: dict[str, Any] = {}
        if staged:
            extra = {"stage_in": [f"blob://{CONTAINER}/in.txt:in.txt"],
                     "stage_out": [f"out.txt:blob://{CONTAINER}/out-{marker}.txt"]}
        try:
            return int(remote.submit(path, name="soak", nodes=1, **extra).job_id)
        except CloudHPCError as exc:
            self._refused([exc.message])
            return None

    def _stream(self, via: str, gap: float, staging: bool, remote: Any) -> None:
        rng = random.Random(f"{self.seed}-{via}")
        n = 0
        while not self.stop.is_set():
            n += 1
            marker = f"soak-{self.seed}-{via}-{n}"
            seconds = rng.uniform(0.2, 3.0)
            staged = staging and rng.random() < 0.3
            with self.lock:
                self.attempts += 1
            job_id = self._submit_cli(marker, seconds) if via == "cli" else \
                self._submit_api(remote, marker, seconds, staged)
            if job_id is not None:
                with self.lock:
                    self.jobs.append(Submitted(marker, via, staged, job_id))
            self.stop.wait(rng.uniform(0.5 * gap, 1.5 * gap))

    # -- faults -----------------------------------------------------------------------------
    def _inject(self, fault: Fault) -> None:
        try:
            if fault.kind == "kill-node":
                self.c.kill_node(fault.node)
            else:
                self.c.kill_daemon(fault.node, fault.daemon)
            fault.done = True
        except CloudHPCError as exc:  # e.g. the daemon was being restarted already
            fault.error = exc.message

    # -- run and judge ----------------------------------------------------------------------
    def run(self, settle: float = 600.0) -> Ledger:
        seconds = self.minutes * 60
        faults = plan_faults(self.c, self.rng, seconds, self.rate)
        staging = self._staging_ready()
        remote = self._remote()
        threads = [threading.Thread(target=self._stream, args=("cli", 2.0, False, None),
                                    daemon=True),
                   threading.Thread(target=self._stream, args=("api", 1.0, staging, remote),
                                    daemon=True)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for fault in faults:
            delay = start + fault.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._inject(fault)
            self.say(f"{fault.at:7.1f} s  {fault.kind} {fault.node} {fault.daemon}".rstrip()
                     + (f"  ({fault.error})" if fault.error else ""))
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        self.stop.set()
        for t in threads:
            t.join(timeout=180)
        self.say(f"{len(self.jobs)} jobs accepted; waiting for them to end")
        try:
            return self.judge(faults, settle)
        finally:
            self._revoke(self.token_id)

    def judge(self, faults: list[Fault], settle: float) -> Ledger:
        ledger = Ledger(self.seed, self.minutes, [asdict(f) for f in faults],
                        self.attempts, len(self.jobs), self.attempts - len(self.jobs),
                        refusals=dict(self.refusals))
        finals = self._wait_for_ends(settle)
        markers = {j.marker for j in self.jobs}
        for job in self.jobs:
            final = finals.get(job.job_id)
            problem: dict[str, Any] = {"job": job.job_id, "marker": job.marker,
                                       "via": job.via, "staged": job.staged}
            if final is None or not final.done:
                ledger.lost += 1
                ledger.problems.append({**problem, "problem": "lost",
                                        "state": final.state.value if final else "unknown"})
                continue
            ends = self._ends(final.workdir, job.marker)
            output = ""
            try:
                output = self.c.logs(job.job_id)
            except CloudHPCError as exc:
                output = f"(no output: {exc.message})"
            others = [m for m in markers - {job.marker} if f"{m}\n" in output]
            if job.marker not in output and final.state is JobState.COMPLETED or others:
                ledger.wrong_id += 1
                ledger.problems.append({**problem, "problem": "wrong id", "shows": others})
            elif ends > 1:
                ledger.duplicated += 1
                ledger.problems.append({**problem, "problem": "duplicated", "ends": ends})
            elif final.state is JobState.COMPLETED and ends == 1:
                ledger.completed_once += 1
            elif final.state in FAILED and final.reason:
                ledger.failed_with_reason += 1
                ledger.problems.append({**problem, "problem": "failed",
                                        "state": final.state.value, "reason": final.reason})
            else:  # completed without running, or failed with no reason given
                ledger.lost += 1
                ledger.problems.append({**problem, "problem": "lost",
                                        "state": final.state.value, "ends": ends,
                                        "reason": final.reason})
        return ledger

    def _wait_for_ends(self, settle: float) -> dict[int, Job | None]:
        """Every accepted job's last known state, once all have ended or SETTLE seconds
        have passed: every job gets the same time to end, however long asking takes."""
        finals: dict[int, Job | None] = {j.job_id: None for j in self.jobs}
        waiting = set(finals)
        deadline = time.monotonic() + settle
        while waiting:
            for job_id in sorted(waiting):
                with contextlib.suppress(CloudHPCError):  # keep what was seen last
                    finals[job_id] = self.c.job(job_id)
                found = finals[job_id]
                if found is not None and found.done:
                    waiting.discard(job_id)
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(1)
        return finals

    def _ends(self, workdir: str, marker: str) -> int:
        host = self.c.dir.host_path(workdir) if workdir else None
        try:
            text = (host / "runs.txt").read_text() if host else ""
        except OSError:
            text = ""
        return text.split("\n").count(f"end {marker}")
