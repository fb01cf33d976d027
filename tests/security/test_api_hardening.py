"""Attack 7: big bodies read before the token check, documentation without a token and from
a CDN, plain HTTP, and job ids below 1."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from .conftest import Sec


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _api_pid(sec: Sec) -> int:
    return int((sec.cluster.dir.node("head") / "run" / "api.pid").read_text())


def test_a_big_body_without_a_token_is_refused_before_it_is_read(sec: Sec) -> None:
    pid = _api_pid(sec)
    before = _rss(pid)

    def body() -> Iterator[bytes]:
        chunk = b"x" * (1 << 20)
        for _ in range(200):
            yield chunk

    for who in (None, "cht-mal"):
        try:
            with sec.http(who) as c:
                res = c.post("/api/jobs", content=body(),
                             headers={"content-type": "application/json"})
            assert res.status_code in (401, 413), res.text[:200]
        except httpx.HTTPError:
            pass  # the server closed the connection before taking 200 MB: also fine
    assert _rss(pid) - before < 64 << 20, "the API buffered the body"


def test_docs_need_a_token_and_nothing_comes_from_a_cdn(sec: Sec) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        res = sec.get(None, path)
        assert res.status_code in (401, 404), (path, res.status_code)
    res = sec.get("cht-mal", "/openapi.json")
    assert res.status_code == 200 and "/api/jobs" in res.json()["paths"]
    for path in ("/", "/docs", "/openapi.json"):
        text = sec.get("cht-mal", path).text
        assert "cdn." not in text and "unpkg" not in text


def test_the_api_speaks_https_with_the_clusters_own_certificate(sec: Sec) -> None:
    assert sec.url.startswith("https://")
    plain = sec.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(plain + "/healthz", timeout=5)
        if r.status_code >= 400:
            raise httpx.HTTPError("refused")
    with pytest.raises(httpx.ConnectError):  # no system CA vouches for it
        httpx.get(sec.url + "/healthz", timeout=5)
    assert httpx.get(sec.url + "/healthz", verify=sec.verify, timeout=5).status_code == 200
    key = sec.cluster.dir.etc / "api.key"
    assert os.stat(key).st_mode & 0o777 == 0o600
    # token create prints the certificate's fingerprint; it matches what the server shows
    try:
        res = subprocess.run([sys.executable, "-m", "cloudhpc.cli", "token", "create", "-c",
                              sec.cluster.name, "--user", "cht-fp"], capture_output=True,
                             text=True)
    finally:
        subprocess.run(["userdel", "cht-fp"], capture_output=True)
    assert res.returncode == 0, res.stderr
    host, port = sec.url.removeprefix("https://").split(":")
    pem = ssl.get_server_certificate((host, int(port)))
    fingerprint = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    assert fingerprint in res.stdout.replace(":", "").lower()


@pytest.mark.parametrize("arg", ["0", "-1", "--", "-5"])
def test_job_ids_below_one_are_no_job(sec: Sec, arg: str) -> None:
    argv = [sys.executable, "-m", "cloudhpc.cli", "job", "-c", sec.cluster.name]
    argv += ["--", arg] if arg != "--" else ["--", "-2"]
    res = subprocess.run(argv, capture_output=True, text=True)
    assert res.returncode != 0
    assert "no job" in res.stderr.lower() and "Traceback" not in res.stderr
    for path in (f"/api/jobs/{arg}", f"/api/jobs/{arg}/logs"):
        assert sec.get("cht-adm", path).status_code in (404, 422)
