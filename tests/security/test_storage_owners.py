"""Attack 4: blob containers without owners, and job SAS tokens wider and longer-lived than
the job (a whole container for 7 days, still valid after the token was revoked)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient

from cloudhpc.api.tokens import TokenStore
from cloudhpc.storage.urls import parse_blob_url

from .conftest import Sec


def test_users_see_only_their_own_granted_or_public_containers(sec: Sec) -> None:
    assert sec.post("cht-vic", "/api/storage/containers", json={"name": "vic-box"}
                    ).status_code in (200, 201)
    assert sec.post("cht-mal", "/api/storage/containers", json={"name": "mal-own"}
                    ).status_code in (200, 201)
    listed = sec.get("cht-mal", "/api/storage").json()["containers"]
    assert "mal-own" in listed and "vic-box" not in listed
    assert sec.get("cht-mal", "/api/storage", params={"url": "blob://vic-box"}
                   ).status_code == 403
    # nor may mallory grant herself the victim's container
    res = sec.post("cht-mal", "/api/storage/containers/vic-box/grants",
                   json={"user": "cht-mal", "write": True})
    assert res.status_code == 403
    # ... nor stage into or out of it
    for field, item in (("stage_out", "x:blob://vic-box/x"), ("stage_in", "blob://vic-box/x")):
        res = sec.post("cht-mal", "/api/jobs", json={"script": "#!/bin/sh\ntrue\n",
                                                      field: [item]})
        assert res.status_code in (400, 403), res.text
    assert "vic-box" in sec.get("cht-adm", "/api/storage").json()["containers"]


def _credential(sec: Sec, job: dict[str, object]) -> dict[str, str]:
    """The SAS tokens the job got (root reads them from cloudhpc's own job record)."""
    path = sec.cluster.dir.shared / ".cloudhpc" / "jobs" / Path(str(job["workdir"])).name \
        / "credential.json"
    data: dict[str, str] = json.loads(path.read_text())["sas"]
    return data


def _blob(sec: Sec, address: str, sas: str) -> BlobClient:
    url = parse_blob_url(address)
    endpoint = sec.cluster.storage.account.endpoint
    return BlobClient.from_blob_url(f"{endpoint}/{url.container}/{url.path}",
                                    credential=sas)


def test_a_jobs_tokens_cover_exactly_its_blobs_and_end_with_it(sec: Sec,
                                                                tmp_path: Path) -> None:
    store = TokenStore(sec.cluster.store.path)
    info, token = store.create(sec.cluster.name, "cht-mal")
    sec.tokens["mal2"] = token
    assert sec.post("mal2", "/api/storage/containers", json={"name": "mal-sas"}
                    ).status_code in (200, 201)
    (tmp_path / "in.txt").write_text("input\n")
    sec.cluster.storage.put(tmp_path / "in.txt", parse_blob_url("blob://mal-sas/in.txt"))
    job_id = sec.submit("mal2", "#!/bin/sh\ncat in.txt > out.txt\n", time_limit=5,
                        stage_in=["blob://mal-sas/in.txt:in.txt"],
                        stage_out=["out.txt:blob://mal-sas/out.txt"])
    job = sec.wait("mal2", job_id)
    assert job["state"] == "completed", job
    sas = _credential(sec, job)
    assert set(sas) == {"blob://mal-sas/in.txt", "blob://mal-sas/out.txt"}
    for text in sas.values():  # expires with the job: its 5 min limit plus a margin
        expiry = parse_qs(text)["se"][0]
        left = time.mktime(time.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(
            time.gmtime())
        assert 0 < left <= 5 * 60 + 60 * 60 + 60  # limit + 1 h margin
    read, write = sas["blob://mal-sas/in.txt"], sas["blob://mal-sas/out.txt"]
    assert _blob(sec, "blob://mal-sas/in.txt", read).download_blob().readall() == b"input\n"
    with pytest.raises(HttpResponseError):  # the read token does not write
        _blob(sec, "blob://mal-sas/in.txt", read).upload_blob(b"evil", overwrite=True)
    with pytest.raises(HttpResponseError):  # the write token reaches no other blob
        _blob(sec, "blob://mal-sas/other.txt", write).upload_blob(b"evil")
    with pytest.raises(HttpResponseError):
        _blob(sec, "blob://tools/prog", write).upload_blob(b"evil", overwrite=True)
    _blob(sec, "blob://mal-sas/out.txt", write).upload_blob(b"again", overwrite=True)
    assert store.revoke(sec.cluster.name, info.id)
    from cloudhpc.storage.access import revoke_token_access

    revoke_token_access(sec.cluster, info.id)  # what `cloudhpc token revoke` does
    with pytest.raises(HttpResponseError):  # revoked token: its jobs' tokens stop working
        _blob(sec, "blob://mal-sas/out.txt", write).upload_blob(b"late", overwrite=True)


def test_a_comment_pointing_at_another_users_record_gets_no_tokens(sec: Sec) -> None:
    """A job's comment selects the record whose tokens slurmctld's prolog makes; a user may
    change their comment to another user's record: the uid slurmctld gives must match."""
    import pwd

    from cloudhpc.storage.grant import GrantRefused, grant

    assert sec.post("cht-vic", "/api/storage/containers", json={"name": "vic-own"}
                    ).status_code in (200, 201)
    job_id = sec.submit("cht-vic", "#!/bin/sh\necho x > out.txt\n",
                        stage_out=["out.txt:blob://vic-own/out.txt"])
    job = sec.wait("cht-vic", job_id)
    record = Path(str(job["workdir"])).name
    mal = pwd.getpwnam("cht-mal").pw_uid
    vic = pwd.getpwnam("cht-vic").pw_uid
    for comment, uid in ((f"cloudhpc-stage:{record}", mal),
                         (f"cloudhpc-stage:../jobs/{record}", vic),
                         (f"cloudhpc-stage:{record}\nx", vic), ("cloudhpc-stage:", vic)):
        with pytest.raises(GrantRefused):
            grant(sec.cluster.dir.root, comment, uid)
