"""A staged job's blob tokens, made when the job starts:

    python -m cloudhpc.storage.grant CLUSTER_ROOT cloudhpc-stage:<id> JOB_UID

run as root by slurmctld's prolog (slurm/conf.py, ctld_prolog) at each start of a job whose
comment names cloudhpc's record of it. The comment is the user's to change, so it only
selects the record: the uid slurmctld gives (which no user sets) must be the one cloudhpc
recorded at submission, or nothing is made. The tokens cover exactly the job's blobs and
expire with the job counted from now (cloudhpc.storage.access.job_sas); they land in the
record's credential.json (root's, readable by the job's group), which the job's staging
reads."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from pydantic import BaseModel

from cloudhpc.secretfile import GROUP_READ, write_secret

GRANT_FILE = "grant.json"
CREDENTIAL_FILE = "credential.json"
RECORD_ID = re.compile(r"cloudhpc-stage:(\d{8}-\d{6}-[0-9a-f]{6})")


class GrantRequest(BaseModel):
    """What a job may reach, recorded by cloudhpc at submission (root's, 0600)."""
    uid: int
    token: str
    time_limit: int | None = None
    reads: list[str] = []
    files: list[str] = []
    folders: list[str] = []


class GrantRefused(Exception):
    pass


def grant(root: Path, comment: str, job_uid: int) -> Path:
    """Make the job's tokens; return the credential file."""
    from cloudhpc.paths import ClusterDir
    from cloudhpc.state import Store
    from cloudhpc.storage.access import ContainerAccess, job_sas
    from cloudhpc.storage.account import BlobAccount
    from cloudhpc.storage.blob import BlobStore

    m = RECORD_ID.fullmatch(comment)
    if m is None:
        raise GrantRefused(f"comment {comment[:80]!r} names no job record")
    cdir = ClusterDir(root)
    meta = cdir.jobs_meta / m.group(1)
    st = os.lstat(meta / GRANT_FILE)
    if st.st_uid != 0 or st.st_mode & 0o077:
        raise GrantRefused(f"{meta / GRANT_FILE} is not cloudhpc's")
    request = GrantRequest.model_validate_json((meta / GRANT_FILE).read_text())
    if request.uid != job_uid:
        raise GrantRefused(f"job of uid {job_uid} names the record of uid {request.uid}")
    store = BlobStore(BlobAccount.load(cdir.blob_account))
    access = ContainerAccess(Store(root.parent.parent / "state.db"), root.name)
    sas = job_sas(store, request.token, access.live_tokens(), request.reads, request.files,
                  request.folders, request.time_limit)
    gid = os.stat(meta).st_gid
    body = json.dumps({"account": store.account.account, "endpoint": store.account.endpoint,
                       "sas": sas})
    write_secret(meta / CREDENTIAL_FILE, body, mode=GROUP_READ, gid=gid)
    return meta / CREDENTIAL_FILE


def main(argv: list[str]) -> int:
    from cloudhpc.errors import CloudHPCError

    try:
        path = grant(Path(argv[0]), argv[1], int(argv[2]))
    except (GrantRefused, CloudHPCError, OSError, ValueError) as exc:
        print(f"cloudhpc grant: {argv[1:3]}: {exc}", file=sys.stderr)
        return 1
    print(f"cloudhpc grant: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
