"""The Python client of a cluster's REST API: what a user with only a URL and a token uses.
`cloudhpc --remote URL --token T ...` goes through it too."""

from __future__ import annotations

import os
import ssl
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from cloudhpc.errors import CloudHPCError, JobError
from cloudhpc.jobs.model import Job, JobState
from cloudhpc.jobs.request import JobRequest
from cloudhpc.jobs.wait import wait_until_done


class RemoteError(CloudHPCError):
    """The API refused a request or could not be reached."""


def _job(data: dict[str, Any]) -> Job:
    fields = {k: v for k, v in data.items() if k in Job.__dataclass_fields__}
    return Job(**{**fields, "state": JobState(data["state"])})


def trust(url: str, fingerprint: str | None, ca: str | Path | None) -> ssl.SSLContext | bool:
    parsed = urlsplit(url)
    if parsed.scheme != "https":
        return True
    if ca is None and fingerprint:
        from cloudhpc.api.tls import pinned_certificate

        cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / \
            "cloudhpc" / "certs"
        ca = pinned_certificate(parsed.hostname or "", parsed.port or 443, fingerprint, cache)
    if ca is None:
        ca = _local_certificate(parsed.hostname or "")
    if ca is None:
        return True
    return ssl.create_default_context(cafile=str(ca))


def _local_certificate(host: str) -> Path | None:
    """The certificate of a cluster of this machine whose head has this address."""
    try:
        from cloudhpc.paths import ClusterDir
        from cloudhpc.plan import make_plan
        from cloudhpc.state import Store
        from cloudhpc.template import Template

        store = Store()
        for record in store.clusters():
            plan = make_plan(Template.model_validate(record.template))
            cert = ClusterDir.of(record.name, store.path.parent).api_cert
            if plan.head.address == host and cert.exists():
                return cert
    except (OSError, ValueError, CloudHPCError):
        return None
    return None


class RemoteCluster:
    """The same job operations as cloudhpc.Cluster, through a cluster's API."""

    def __init__(self, url: str, token: str, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, *,
                 fingerprint: str | None = None, ca: str | Path | None = None,
                 retry_for: float = 60.0) -> None:
        """An https URL is verified against CA (a certificate file), else the certificate
        whose SHA-256 FINGERPRINT the cluster's admin gave, else the certificate of a
        cluster of this machine with that head address, else the system's CAs."""
        self.url = url.rstrip("/")
        self.retry_for = retry_for  # how long a submission is retried (same key)
        self.name = self.url
        verify = trust(self.url, fingerprint, ca)
        self.http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport,
                                 verify=verify,
                                 headers={"Authorization": f"Bearer {token}"})

    def _call(self, method: str, path: str, retry_for: float = 0.0, **kwargs: Any) -> Any:
        """One request. With RETRY_FOR, a request that may be repeated safely (an
        idempotent submission) is sent again while the API cannot be reached or answers
        503 (its worker died) or 409 (the same key still in flight), backing off."""
        deadline = time.monotonic() + retry_for
        delay = 0.25
        while True:
            try:
                res = self.http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                if time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 4.0)
                    continue
                raise RemoteError(f"cannot reach {self.url}: {exc}",
                                  hint="check the URL and that the cluster is up") from None
            if res.status_code in (409, 503) and time.monotonic() + delay < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 4.0)
                continue
            break
        if res.status_code == 401:
            raise RemoteError("the API refused the token (401)",
                              hint="create one with `cloudhpc token create --user NAME`")
        if res.status_code >= 400:
            try:
                body = res.json()
                detail = body.get("detail", res.text)
                hint = body.get("hint", "")
            except ValueError:
                detail, hint = res.text, ""
            error = JobError if res.status_code in (403, 404) else RemoteError
            raise error(f"{detail if isinstance(detail, str) else detail!r} "
                        f"({res.status_code})", hint=hint)
        return res.json()

    def cluster(self) -> dict[str, Any]:
        return dict(self._call("GET", "/api/cluster"))

    def status(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/nodes"))

    def submit(self, script: str | Path | JobRequest, *, nodes: int | None = None,
               ntasks_per_node: int | None = None, partition: str | None = None,
               name: str | None = None, stage_in: list[str] | None = None,
               stage_out: list[str] | None = None, exe: list[str] | None = None,
               wait: bool = False, timeout: float | None = None,
               time_limit: int | None = None) -> Job:
        request = JobRequest.of(script, nodes=nodes, ntasks_per_node=ntasks_per_node,
                                partition=partition, name=name, stage_in=stage_in or None,
                                stage_out=stage_out or None, exe=exe or None,
                                time_limit=time_limit)
        # one key per submission: a retry after a lost answer gets the same job, not a
        # second one
        job = _job(self._call("POST", "/api/jobs", retry_for=self.retry_for,
                              json=request.model_dump(mode="json", exclude_none=True),
                              headers={"Idempotency-Key": uuid.uuid4().hex}))
        return self.wait(job.job_id, timeout) if wait else job

    def jobs(self, history: bool = True, state: str | None = None,
             limit: int = 1000) -> list[Job]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        found = [_job(j) for j in self._call("GET", "/api/jobs", params=params)["jobs"]]
        return sorted(found if history else [j for j in found if not j.done],
                      key=lambda j: j.job_id)

    def job(self, job_id: int) -> Job:
        return _job(self._call("GET", f"/api/jobs/{job_id}"))

    def logs(self, job_id: int) -> str:
        return str(self._call("GET", f"/api/jobs/{job_id}/logs")["output"])

    def cancel(self, job_id: int) -> None:
        self._call("DELETE", f"/api/jobs/{job_id}")

    def report(self, since: str = "30d", by: str = "user") -> dict[str, Any]:
        return dict(self._call("GET", "/api/report", params={"since": since, "by": by}))

    def events(self, since: float = 0.0) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/events", params={"since": since}))

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        return wait_until_done(self.job, job_id, timeout, first=0.2, longest=1.0)


__all__ = ["RemoteCluster", "RemoteError"]
