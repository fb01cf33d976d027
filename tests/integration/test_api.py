"""The head node's REST API on a real cluster: tokens and roles on every route, jobs run as
the token's user, the remote CLI, the API daemon killed, and a fuzz run from its OpenAPI."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudhpc.api.client import RemoteCluster
from cloudhpc.api.tokens import TokenStore
from cloudhpc.cluster import Cluster
from cloudhpc.errors import JobError
from cloudhpc.jobs.model import JobState

ROOT = Path(__file__).resolve().parents[2]
USERS = ["cht-alice", "cht-bob", "cht-fuzz", "cht-admin"]


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """The API's URL and tokens for an admin and three users; the users are removed after."""
    store = TokenStore(cluster.store.path)
    tokens = {"admin": store.create(cluster.name, "cht-admin", admin=True)[1]}
    for user in USERS[:3]:
        tokens[user] = store.create(cluster.name, user)[1]
    try:
        yield {"url": cluster.api_url, "tokens": tokens, "store": store,
               "cert": str(cluster.dir.api_cert)}
    finally:
        for user in USERS:
            subprocess.run(["userdel", user], capture_output=True)


def client(api: dict[str, Any], who: str) -> RemoteCluster:
    return RemoteCluster(api["url"], api["tokens"][who])


def raw(api: dict[str, Any], method: str, path: str, token: str | None = None,
        **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, api["url"] + path, headers=headers, timeout=30,
                         verify=api["cert"], **kwargs)


def routes(api: dict[str, Any]) -> list[tuple[str, str]]:
    spec = raw(api, "GET", "/openapi.json", api["tokens"]["admin"]).json()
    return [(method.upper(), path.replace("{job_id}", "1"))
            for path, ops in spec["paths"].items() for method in ops]


def test_every_route_needs_a_valid_token(api: dict[str, Any]) -> None:
    assert raw(api, "GET", "/healthz").json()["ok"] is True
    found = routes(api)
    assert ("POST", "/api/jobs") in found and ("GET", "/api/storage") in found
    for method, path in found:
        if path == "/healthz":
            continue
        for token in (None, "chpc_00000000_not-a-real-token-at-all-xyz", "garbage"):
            res = raw(api, method, path.replace("{name}", "box"), token,
                      json={"script": "true"})
            assert res.status_code == 401, (method, path, token, res.text)
            assert res.headers.get("www-authenticate") == "Bearer"


def test_revoked_token_is_refused(cluster: Cluster, api: dict[str, Any]) -> None:
    info, secret = api["store"].create(cluster.name, "cht-bob")
    assert raw(api, "GET", "/api/cluster", secret).status_code == 200
    assert api["store"].revoke(cluster.name, info.id)
    deadline = time.monotonic() + 6  # verified tokens are remembered for 5 s
    while raw(api, "GET", "/api/cluster", secret).status_code != 401:
        assert time.monotonic() < deadline, "a revoked token still works after 6 s"
        time.sleep(0.2)


def test_jobs_run_as_the_token_user_and_others_get_403(api: dict[str, Any]) -> None:
    alice, bob, admin = client(api, "cht-alice"), client(api, "cht-bob"), client(api, "admin")
    script = ROOT / "examples" / "jobs" / "whoami.sh"
    job = alice.submit(script, wait=True, timeout=120)
    assert job.state is JobState.COMPLETED and job.user == "cht-alice"
    assert alice.logs(job.job_id).split()[0] == "cht-alice"
    out_file = Path(job.stdout)
    assert out_file.name.startswith("slurm-")
    for call in (bob.job, bob.logs, bob.cancel):
        with pytest.raises(JobError, match="403"):
            call(job.job_id)  # type: ignore[operator]
    # lists come from the view, refreshed about every second
    deadline = time.monotonic() + 15
    while job.job_id not in [j.job_id for j in admin.jobs()] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert job.job_id in [j.job_id for j in admin.jobs()]
    assert job.job_id not in [j.job_id for j in bob.jobs()]
    assert admin.job(job.job_id).user == "cht-alice"
    # a pending job of alice's may be cancelled by an admin
    slow = alice.submit(script, nodes=2, ntasks_per_node=4)
    admin.cancel(slow.job_id)
    assert alice.wait(slow.job_id, 60).state is JobState.CANCELLED
    assert pwd.getpwnam("cht-alice").pw_shell == "/bin/bash"


def test_staged_job_of_a_user_gets_container_tokens_not_the_key(
        cluster: Cluster, api: dict[str, Any], tmp_path: Path) -> None:
    from cloudhpc.storage.access import ROOT as ADMIN
    from cloudhpc.storage.access import ContainerAccess
    from cloudhpc.storage.urls import parse_blob_url

    store = cluster.storage
    store.put(ROOT / "examples/jobs/words.txt", parse_blob_url("blob://apidata/words.txt"))
    store.mkdir("apiresults")
    access = ContainerAccess(cluster.store, cluster.name)
    access.grant(ADMIN, "apidata", "cht-alice", False)
    access.grant(ADMIN, "apiresults", "cht-alice", True)
    alice = client(api, "cht-alice")
    job = alice.submit(ROOT / "examples/jobs/wordcount.sh",
                       stage_in=["blob://apidata/words.txt:input/words.txt"],
                       stage_out=["result.txt:blob://apiresults/alice/result.txt"],
                       wait=True, timeout=120)
    assert job.state is JobState.COMPLETED, alice.logs(job.job_id)
    assert job.user == "cht-alice"
    meta = cluster.dir.jobs_meta / Path(job.workdir).name
    credential = json.loads((meta / "credential.json").read_text())
    assert set(credential["sas"]) == {"blob://apidata/words.txt",
                                      "blob://apiresults/alice/result.txt"}
    assert "key" not in credential
    got = tmp_path / "r.txt"
    store.get(parse_blob_url("blob://apiresults/alice/result.txt"), got)
    assert got.read_text().split()[:2] == ["3", "the"]


def test_lists_and_views(api: dict[str, Any]) -> None:
    admin = api["tokens"]["admin"]
    nodes = raw(api, "GET", "/api/nodes", admin).json()
    assert {n["name"] for n in nodes} >= {"head", "hpc-1", "hpc-2"}
    sets = raw(api, "GET", "/api/nodesets", admin).json()
    assert sets[0]["name"] == "hpc" and sets[0]["states"].get("idle", 0) >= 1
    events = raw(api, "GET", "/api/events", admin).json()
    assert events and all("kind" in e for e in events)
    assert raw(api, "GET", "/api/storage", admin).json()["containers"] is not None
    res = raw(api, "GET", "/api/storage", admin, params={"url": "not-a-url"})
    assert res.status_code == 400 and "blob://" in res.json()["detail"]
    res = raw(api, "POST", "/api/jobs", admin, json={"script": "#!/bin/sh\ntrue\n",
                                                     "partition": "nosuch"})
    assert res.status_code == 400 and "no partition" in res.json()["detail"]


def test_remote_cli(api: dict[str, Any], tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from $(hostname)\n")
    env = {**os.environ, "CLOUDHPC_REMOTE": api["url"],
           "CLOUDHPC_TOKEN": api["tokens"]["cht-bob"]}
    res = subprocess.run([sys.executable, "-m", "cloudhpc.cli", "submit", str(script),
                          "--wait"], capture_output=True, text=True, env=env, timeout=180)
    assert res.returncode == 0, res.stderr
    assert "hello from hpc-" in res.stdout
    listed = subprocess.run([sys.executable, "-m", "cloudhpc.cli", "jobs", "--all", "--json"],
                            capture_output=True, text=True, env=env, timeout=60)
    jobs = json.loads(listed.stdout)
    assert jobs and {j["user"] for j in jobs} == {"cht-bob"}
    bad = subprocess.run([sys.executable, "-m", "cloudhpc.cli", "--token", "nope", "jobs"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "refused the token" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_api_killed_comes_back_and_keeps_accepted_jobs(cluster: Cluster,
                                                       api: dict[str, Any]) -> None:
    bob = client(api, "cht-bob")
    job = bob.submit(ROOT / "examples" / "jobs" / "whoami.sh")
    cluster.kill_daemon("head", "api")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if raw(api, "GET", "/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    assert bob.wait(job.job_id, 120).state is JobState.COMPLETED


def test_fuzz_no_server_errors(api: dict[str, Any]) -> None:
    """Schemathesis generates requests from the OpenAPI spec (as an unprivileged user, so
    fuzzed scripts cannot act as root): no 5xx and no traceback in any response."""
    schema = Path(tempfile.mkdtemp()) / "openapi.json"  # the schema needs a token itself
    schema.write_text(raw(api, "GET", "/openapi.json", api["tokens"]["cht-fuzz"]).text)
    res = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", str(schema),
         "--url", api["url"], "--tls-verify", api["cert"],
         "--checks", "not_a_server_error",
         "-H", f"Authorization: Bearer {api['tokens']['cht-fuzz']}", "--max-examples", "15",
         "--request-timeout", "30", "--generation-deterministic", "--no-color"],
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "Traceback" not in res.stdout
