"""A cluster attacked by an ordinary user: cht-mal (the attacker), cht-vic (the victim) and
cht-adm (an admin token). Every test here replays one attack from issue 10 against a real
cluster; helpers speak to the API exactly as an outside client would (HTTPS, bearer token)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudhpc.api.tokens import TokenStore
from cloudhpc.cluster import Cluster
from tests.conftest import template

USERS = ["cht-mal", "cht-vic", "cht-adm"]


@dataclass
class Sec:
    cluster: Cluster
    url: str
    verify: Any
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, str] = field(default_factory=dict)

    def http(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, verify=self.verify,
                            timeout=60)

    def get(self, who: str | None, path: str, **kw: Any) -> httpx.Response:
        with self.http(who) as c:
            return c.get(path, **kw)

    def post(self, who: str | None, path: str, **kw: Any) -> httpx.Response:
        with self.http(who) as c:
            return c.post(path, **kw)

    def delete(self, who: str | None, path: str) -> httpx.Response:
        with self.http(who) as c:
            return c.delete(path)

    def submit(self, who: str, script: str, **options: Any) -> int:
        res = self.post(who, "/api/jobs", json={"script": script, **options})
        assert res.status_code == 201, res.text
        return int(res.json()["job_id"])

    def wait(self, who: str, job_id: int, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(who, f"/api/jobs/{job_id}").json()
            if job["state"] not in ("pending", "running", "completing", "unknown"):
                return dict(job)
            assert time.monotonic() < deadline, f"job {job_id} still {job['state']}"
            time.sleep(0.3)

    def wait_running(self, who: str, job_id: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.get(who, f"/api/jobs/{job_id}").json()["state"] != "running":
            assert time.monotonic() < deadline, f"job {job_id} did not start"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def sec(home: Path) -> Iterator[Sec]:
    c = Cluster.up(template("t-sec", "198.19.16.0/24"))
    try:
        url = getattr(c, "api_url", f"http://{c.plan.head.address}:8443")
        cert = c.dir.etc / "api.crt"
        state = Sec(c, url, str(cert) if cert.exists() else True)
        store = TokenStore(c.store.path)
        for user in USERS:
            info, secret = store.create(c.name, user, admin=user == "cht-adm")
            state.tokens[user] = secret
            state.token_ids[user] = info.id
        yield state
    finally:
        c.down()
        for user in USERS:
            subprocess.run(["userdel", user], capture_output=True)
