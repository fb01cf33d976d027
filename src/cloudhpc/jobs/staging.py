"""Submit side of job data staging: check every transfer against the blob store and the
caller's rights before anything is queued, fetch programs into the cache, then write
cloudhpc's record of the job (request, blob tokens, program checksums) and a wrapper that
stages in, runs the user's script and stages out (even when the script failed). The job
side is cloudhpc.storage.stage.

cloudhpc's record lives in /shared/.cloudhpc/jobs/<id>/ (root's, readable by the job's
group only): the job reads it but cannot change it. A user's job gets its blob tokens there
when it starts (cloudhpc.storage.grant, run by slurmctld's prolog), so that they expire
with the job counted from its start, however long it waited. Programs are fetched here, by cloudhpc,
into /shared/.cloudhpc/exe/<sha256>/ (root's, 0755), keyed by the checksum cloudhpc computed
itself; the job checks the file against that checksum before it puts it on PATH."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cloudhpc.paths import ClusterDir
from cloudhpc.secretfile import GROUP_READ, PRIVATE, write_secret
from cloudhpc.storage.access import ROOT, ContainerAccess, Who
from cloudhpc.storage.blob import BlobStore, _sha256
from cloudhpc.storage.grant import GRANT_FILE, GrantRequest
from cloudhpc.storage.spec import Program, StageInItem, StageOutItem, StagingSpec
from cloudhpc.storage.urls import (
    StageIn,
    StageOut,
    StagingError,
    parse_blob_url,
    parse_stage_in,
    parse_stage_out,
)


@dataclass
class Staging:
    stage_in: list[StageIn] = field(default_factory=list)
    stage_out: list[StageOut] = field(default_factory=list)
    exe: list[str] = field(default_factory=list)
    blobs: dict[str, list[str]] = field(default_factory=dict)  # stage-in source -> blobs

    def __bool__(self) -> bool:
        return bool(self.stage_in or self.stage_out or self.exe)


def parse(stage_in: Sequence[str | StageIn], stage_out: Sequence[str | StageOut],
          exe: Sequence[str]) -> Staging:
    return Staging(
        [s if isinstance(s, StageIn) else parse_stage_in(s) for s in stage_in],
        [s if isinstance(s, StageOut) else parse_stage_out(s) for s in stage_out],
        [str(parse_blob_url(e, what="--exe")) for e in exe])


def check(store: BlobStore, access: ContainerAccess, who: Who, staging: Staging) -> Staging:
    """Check rights and existence of every transfer; raise before queuing."""
    if not staging:
        return staging
    for item in staging.stage_in:
        access.check(who, item.source.container, False, f"--stage-in {item.source}")
        entries = store.ls(item.source)
        if not entries:
            raise StagingError(f"--stage-in source {item.source} does not exist",
                               hint=f"upload it first: cloudhpc storage put FILE "
                               f"{item.source}")
        staging.blobs[str(item.source)] = [e.name for e in entries]
    for url_text in staging.exe:
        url = parse_blob_url(url_text)
        access.check(who, url.container, False, f"--exe {url_text}")
        if not any(e.name == url_text for e in store.ls(url)):
            raise StagingError(f"--exe {url_text} is not a blob",
                               hint=f"upload the program first: cloudhpc storage put PROGRAM "
                               f"{url_text}")
    for out in staging.stage_out:
        access.check(who, out.dest.container, True, f"--stage-out {out.dest}")
        if not store.container_exists(out.dest.container):
            raise StagingError(f"--stage-out container '{out.dest.container}' does not exist",
                               hint=f"create it: cloudhpc storage mkdir {out.dest.container}")
    return staging


def fetch_program(store: BlobStore, url_text: str, cache: Path) -> Program:
    """Download a program into the cache under the SHA-256 cloudhpc computes here (never
    the one the blob's writer recorded); reuse an entry that still matches."""
    url = parse_blob_url(url_text, what="--exe")
    name = Path(url.path).name
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        got = store.get(url, Path(tmp) / name)[0]
        sha = _sha256(got)
        entry = cache / sha
        target = entry / name
        cached = target.is_file() and _sha256(target) == sha
        if not cached:
            os.chmod(got, 0o755)
            staged = Path(tmp) / "entry"
            staged.mkdir(mode=0o755)
            os.replace(got, staged / name)
            if entry.exists():  # a damaged entry: replaced whole
                os.replace(entry, Path(tmp) / "old")
            os.replace(staged, entry)
    return Program(url=url_text, sha256=sha, path=str(target), cached=cached)



def _private(path: Path, text: str, gid: int, mode: int = GROUP_READ) -> None:
    write_secret(path, text, mode=mode, exclusive=True, gid=gid)


def needs_grant(who: Who, store: BlobStore) -> bool:
    """A user's staged job gets blob tokens made at its start (cloudhpc.storage.grant); so
    does every staged job on Azure, where no node but the head can reach the account (with
    its managed identity)."""
    return who != ROOT or store.account.identity


def write(cdir: ClusterDir, store: BlobStore, staging: Staging, meta: Path, uid: int,
          gid: int, who: Who, token: str, time_limit: int | None) -> str:
    """Write the staging part of cloudhpc's record of the job into META (root's, group
    GID); return the staging command the job's wrapper runs (cloudhpc.jobs.wrapper)."""
    programs = [fetch_program(store, e, cdir.exe_cache) for e in staging.exe]
    for program in programs:  # the path the job sees
        program["path"] = "/shared/" + str(Path(program["path"]).relative_to(cdir.shared))
    spec = StagingSpec({
        "in": [StageInItem(source=str(s.source), dest=s.dest,
                           blobs=staging.blobs.get(str(s.source), []))
               for s in staging.stage_in],
        "out": [StageOutItem(source=s.source, dest=str(s.dest)) for s in staging.stage_out],
        "exe": programs})
    _private(meta / "staging.json", json.dumps(spec, indent=1), gid)
    if needs_grant(who, store):
        request = GrantRequest(
            uid=uid, token=token, time_limit=time_limit,
            reads=sorted({b for blobs in staging.blobs.values() for b in blobs}),
            files=sorted({str(o.dest) for o in staging.stage_out
                          if not o.dest.path.endswith("/") and not o.source.endswith("/")}),
            folders=sorted({o.dest.container for o in staging.stage_out
                            if o.dest.path.endswith("/") or o.source.endswith("/")}))
        _private(meta / GRANT_FILE, request.model_dump_json(), 0, PRIVATE)
    node_meta = f"/shared/{meta.relative_to(cdir.shared)}"  # the path nodes see
    return (f"{shlex.quote(sys.executable)} -m cloudhpc.storage.stage "
            f"{shlex.quote(str(cdir.root))} {shlex.quote(node_meta)}")

