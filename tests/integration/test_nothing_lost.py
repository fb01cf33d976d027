"""Issue 12: an accepted job runs once, under its own id, whatever crashes. Each test is an
attack on that promise with real faults: a static node killed mid-job, slurmctld killed
while jobs arrive, the API killed during concurrent submissions and the clients retrying."""

from __future__ import annotations

import concurrent.futures
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudhpc.api.tokens import TokenStore
from cloudhpc.cluster import NODE_ENV, Cluster
from cloudhpc.errors import CloudHPCError
from cloudhpc.jobs.model import JobState
from cloudhpc.slurm.conf import NODE_SPOOL
from tests.conftest import template

USER = "cht-idem"


@pytest.fixture(scope="module")
def lost(home: Path) -> Iterator[Cluster]:
    c = Cluster.up({**template("t-lost", "198.19.21.0/24", count=2),
                    "storage": {"blob": {"enabled": True}}})
    try:
        yield c
    finally:
        c.down()
        subprocess.run(["userdel", USER], capture_output=True)


def marked_script(tmp_path: Path, marker: str, seconds: float = 0.5) -> Path:
    """A job that says who it is and counts its starts and ends in its own directory."""
    path = tmp_path / f"{marker}.sh"
    path.write_text(f"#!/bin/bash\necho start >> runs.txt\necho {marker}\nsleep {seconds}\n"
                    "echo end >> runs.txt\n")
    return path


def runs(c: Cluster, workdir: str) -> list[str]:
    host = c.dir.host_path(workdir)
    assert host is not None
    try:
        return (host / "runs.txt").read_text().split()
    except FileNotFoundError:
        return []


def wait_running(c: Cluster, job_id: int, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.job(job_id)
        if job.state is JobState.RUNNING and job.nodes:
            return job.nodes
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not start")


def test_static_node_killed_mid_job_reruns_it_on_a_fresh_node(lost: Cluster,
                                                               tmp_path: Path) -> None:
    # both nodes: the job must run again on the replaced one
    job = lost.submit(marked_script(tmp_path, "mid-job", seconds=6), nodes=2)
    assert wait_running(lost, job.job_id) == "hpc-[1-2]"
    node = "hpc-1"
    time.sleep(1)
    # what the old machine left behind must not reach the new one
    planted = f"{NODE_SPOOL}/left-by-old-node"  # the node's own spool, seen from inside it
    on_node = lost.node_argv(node, ["sh", "-c", f"echo old machine > {planted}"])
    subprocess.run(on_node, env=NODE_ENV, check=True)
    leftovers = [lost.dir.node(node) / "scratch" / "left-by-old-node"]
    for path in leftovers:
        path.write_text("old machine\n")
    lost.kill_node(node)
    done = lost.wait(job.job_id, timeout=180)
    assert done.state is JobState.COMPLETED, (done.state, done.reason)
    assert runs(lost, done.workdir).count("end") == 1
    assert "mid-job" in lost.logs(job.job_id)
    # the new node is a fresh machine: its old logs kept aside, no spool of the old one
    previous = list((lost.dir.logs / "previous").glob(f"{node}-*"))
    assert previous, "the replaced node's logs were not kept"
    assert not [p for p in leftovers if p.exists()], "the new node kept the old one's files"
    seen = subprocess.run(lost.node_argv(node, ["ls", "-A", NODE_SPOOL]), env=NODE_ENV,
                          capture_output=True, text=True, check=True).stdout.split()
    assert "left-by-old-node" not in seen, seen
    # the old spool made slurmd purge the relaunched job's script as 'vestigial' before
    # it ran; a purge after the batch step is done is slurmd's own clean-up race
    log = (lost.dir.logs / f"slurmd-{node}.log").read_text().splitlines()
    done_at = next((i for i, line in enumerate(log) if "done with job" in line), len(log))
    assert not [line for line in log[:done_at] if "vestigial" in line], log


def test_slurmctld_killed_while_jobs_arrive(lost: Cluster, tmp_path: Path) -> None:
    accepted: dict[str, int] = {}
    for i in range(5):
        marker = f"first-{i}-{uuid.uuid4().hex[:6]}"
        accepted[marker] = lost.submit(marked_script(tmp_path, marker), nodes=1).job_id
    lost.kill_daemon("head", "slurmctld")
    refused = 0
    for i in range(6):
        marker = f"later-{i}-{uuid.uuid4().hex[:6]}"
        try:
            accepted[marker] = lost.submit(marked_script(tmp_path, marker), nodes=1).job_id
        except CloudHPCError:
            refused += 1  # not accepted: the caller was told
        time.sleep(0.66)
    assert len(set(accepted.values())) == len(accepted), f"an id was issued twice: {accepted}"
    for marker, job_id in accepted.items():
        done = lost.wait(job_id, timeout=240)
        assert done.state is JobState.COMPLETED, (marker, job_id, done.state, done.reason)
        output = lost.logs(job_id)
        assert marker in output, f"job {job_id} shows another job's output: {output!r}"
        assert not [m for m in accepted if m != marker and m in output]
        assert runs(lost, done.workdir).count("end") == 1, (marker, runs(lost, done.workdir))
    assert len(accepted) >= 5 + 6 - refused


def _api(lost: Cluster) -> dict[str, Any]:
    store = TokenStore(lost.store.path)
    return {"url": lost.api_url, "cert": str(lost.dir.api_cert),
            "a": store.create(lost.name, USER)[1], "b": store.create(lost.name, USER)[1]}


def _post(api: dict[str, Any], token: str, key: str, marker: str,
          timeout: float = 30) -> httpx.Response:
    body = {"script": f"#!/bin/bash\necho start >> runs.txt\necho {marker}\n"
                      "echo end >> runs.txt\n", "name": "idem"}
    return httpx.post(api["url"] + "/api/jobs", json=body, timeout=timeout,
                      verify=api["cert"], headers={"Authorization": f"Bearer {token}",
                                                   "Idempotency-Key": key})


def test_idempotency_key_returns_the_first_job(lost: Cluster) -> None:
    api = _api(lost)
    first = _post(api, api["a"], "key-1", "idem-one")
    assert first.status_code == 201, first.text
    again = _post(api, api["a"], "key-1", "idem-one")
    assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
    other = _post(api, api["b"], "key-1", "idem-other")  # keys belong to a token
    assert other.status_code == 201 and other.json()["job_id"] != first.json()["job_id"]
    for key in ("bad key", "k" * 256):
        bad = httpx.post(api["url"] + "/api/jobs", json={"script": "#!/bin/sh\n"},
                         verify=api["cert"], headers={"Authorization": f"Bearer {api['a']}",
                                                      "Idempotency-Key": key})
        assert bad.status_code == 422, key


def test_api_killed_during_concurrent_submissions_and_clients_retry(lost: Cluster) -> None:
    """15 clients submit at once; the API is killed in the middle. Each client retries with
    its key until it has an answer: every submission runs exactly once."""
    api = _api(lost)
    markers = {f"k{i}-{uuid.uuid4().hex[:8]}": f"conc-{i}-{uuid.uuid4().hex[:6]}"
               for i in range(15)}

    answered: list[str] = []

    def submit(key: str) -> int:
        deadline = time.monotonic() + 120
        while True:
            try:
                res = _post(api, api["a"], key, markers[key], timeout=20)
                if res.status_code in (200, 201):
                    answered.append(key)
                    return int(res.json()["job_id"])
                assert res.status_code in (409, 503), res.text
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no answer for {key}"
            time.sleep(0.5)

    with concurrent.futures.ThreadPoolExecutor(15) as pool:
        futures = {key: pool.submit(submit, key) for key in markers}
        deadline = time.monotonic() + 60
        while len(answered) < 3 and time.monotonic() < deadline:  # in the middle
            time.sleep(0.005)
        lost.kill_daemon("head", "api")
        assert len(answered) < 15, "every submission was answered before the kill"
        ids = {key: f.result() for key, f in futures.items()}
    assert len(set(ids.values())) == 15
    # exactly one Slurm job per submission, found by its output
    for key, job_id in ids.items():
        done = lost.wait(job_id, timeout=180)
        assert done.state is JobState.COMPLETED
        assert markers[key] in lost.logs(job_id)
    jobdirs = lost.dir.shared / "jobs"
    for marker in markers.values():
        ran = [p for p in jobdirs.glob("*/slurm-*.out") if marker in p.read_text()]
        assert len(ran) == 1, f"{marker} ran {len(ran)} times: {ran}"


def test_several_faults_at_once(lost: Cluster, tmp_path: Path) -> None:
    """slurmctld, the API, munged on a compute node, Azurite, the reconciler and a node
    killed within 9 s while 25 jobs are submitted (through the API, some staged, and the
    Python API): each runs to its end once, or fails with a reason."""
    from cloudhpc.api.client import RemoteCluster
    from cloudhpc.storage.access import ContainerAccess
    from cloudhpc.storage.urls import parse_blob_url

    api = _api(lost)
    lost.storage.mkdir("faults")
    ContainerAccess(lost.store, lost.name).record("faults", USER)
    (tmp_path / "in.txt").write_text("input\n")
    lost.storage.put(tmp_path / "in.txt", parse_blob_url("blob://faults/in.txt"))
    remote = RemoteCluster(api["url"], api["a"], ca=api["cert"], retry_for=120)
    accepted: dict[str, int] = {}
    errors: list[str] = []

    def stream() -> None:
        for i in range(25):
            marker = f"multi-{i}-{uuid.uuid4().hex[:6]}"
            script = marked_script(tmp_path, marker, seconds=1)
            try:
                if i % 3 == 0:
                    job = lost.submit(script, nodes=1)
                elif i % 3 == 1:
                    job = remote.submit(script, nodes=1)
                else:
                    job = remote.submit(script, nodes=1,
                                        stage_in=["blob://faults/in.txt:in.txt"],
                                        stage_out=[f"runs.txt:blob://faults/{marker}.txt"])
                accepted[marker] = job.job_id
            except CloudHPCError as exc:
                errors.append(f"{marker}: {exc.message}")
            time.sleep(0.4)

    worker = concurrent.futures.ThreadPoolExecutor(1)
    done_stream = worker.submit(stream)
    start = time.monotonic()
    for at, node, daemon in ((0.5, "head", "slurmctld"), (2.0, "head", "api"),
                             (3.5, "hpc-2", "munged"), (5.0, "storage", "azurite"),
                             (6.5, "head", "reconciler"), (8.5, "hpc-1", None)):
        time.sleep(max(0.0, start + at - time.monotonic()))
        if daemon is None:
            lost.kill_node(node)
        else:
            lost.kill_daemon(node, daemon)
    done_stream.result(timeout=300)
    worker.shutdown()
    assert not errors, errors  # every submission was accepted (retried through the faults)
    for marker, job_id in accepted.items():
        done = lost.wait(job_id, timeout=300)
        ends = runs(lost, done.workdir).count("end")
        if done.state is JobState.COMPLETED:
            assert ends == 1, (marker, job_id, ends)
            assert marker in lost.logs(job_id)
        else:  # allowed only with a reason that names the fault
            assert done.reason, (marker, job_id, done.state)
            assert ends <= 1
    assert len(accepted) == 25
