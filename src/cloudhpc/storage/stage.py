"""Job data staging, run inside the job on its first node by the job's wrapper script, as
the job's user:

    python -m cloudhpc.storage.stage CLUSTER_ROOT META in JOBDIR    # before the user's script
    python -m cloudhpc.storage.stage CLUSTER_ROOT META out JOBDIR   # after it, even if it failed

The request and the job's blob tokens are cloudhpc's record in META (written at submit, the
job cannot change them); what happened goes to JOBDIR/.cloudhpc/status.json, which `cloudhpc
job ID` shows (read with the user's privileges: it is the user's file). Stage-out sends only
what is inside the job's directory: a link that leads out of it is refused. A program from
the cache is run only if it is root's, writable by no one else and has the checksum cloudhpc
recorded. Transfers retry with back-off (4 tries, 1-8 s apart) and then fail the job with a
reason that names the transfer; a job never starts with inputs missing."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

from cloudhpc.errors import CloudHPCError
from cloudhpc.storage.account import BlobAccount
from cloudhpc.storage.blob import BlobStore, _sha256
from cloudhpc.storage.spec import PhaseStatus, Program, StagingSpec, Transfer
from cloudhpc.storage.urls import BlobURL, local_relative, parse_blob_url

META = ".cloudhpc"


def status_path(jobdir: Path) -> Path:
    return jobdir / META / "status.json"


def _read_own_status(jobdir: Path) -> dict[str, PhaseStatus]:
    try:
        data = json.loads(status_path(jobdir).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_status(jobdir: Path, phase: str, record: PhaseStatus) -> None:
    (jobdir / META).mkdir(exist_ok=True)
    status = _read_own_status(jobdir)
    status[phase] = record
    tmp = status_path(jobdir).with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    tmp.write_text(json.dumps(status, indent=1))
    tmp.replace(status_path(jobdir))



def _root_only(path: Path) -> bool:
    st = os.lstat(path)
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) \
        and not stat.S_ISLNK(st.st_mode)


def verify_program(entry: Program) -> str:
    """The directory to put on PATH, after checking the cached program cloudhpc fetched."""
    path = Path(entry["path"])
    for part in [path, *list(path.parents)[:3]]:
        if not _root_only(part):
            raise CloudHPCError(f"program {entry['url']}: {part} is not root's alone; "
                                "refusing to run it")
    if _sha256(path) != entry["sha256"]:
        raise CloudHPCError(f"program {entry['url']}: checksum of {path} does not match the "
                            "one cloudhpc recorded; refusing to run it")
    return str(path.parent)


def stage_in(store: BlobStore, jobdir: Path, spec: StagingSpec) -> PhaseStatus:
    record = PhaseStatus(state="running", transfers=[], started=time.time())
    _write_status(jobdir, "in", record)
    try:
        for item in spec.get("in", []):
            began = time.monotonic()
            url = parse_blob_url(item["source"])
            dest = jobdir / item["dest"]
            blobs = item.get("blobs") or [item["source"]]
            files = []
            if blobs == [item["source"]]:
                files = store.get(url, dest)
            else:
                for blob in blobs:
                    rel = local_relative(blob[len(item["source"]) + 1:])
                    part = parse_blob_url(blob)
                    files += store.get(BlobURL(part.container, part.path), dest / rel)
            record["transfers"].append(Transfer(
                source=item["source"], dest=item["dest"], files=len(files),
                bytes=sum(f.stat().st_size for f in files),
                seconds=round(time.monotonic() - began, 3), ok=True))
        paths = []
        for exe in spec.get("exe", []):
            paths.append(verify_program(exe))
            record["transfers"].append(Transfer(source=exe["url"], dest=paths[-1],
                                                cached=bool(exe.get("cached")), ok=True))
        (jobdir / META / "env").write_text(
            "".join(f'export PATH="{p}:$PATH"\n' for p in paths))
        record["state"] = "done"
    except CloudHPCError as exc:
        record["state"] = "failed"
        record["error"] = f"stage-in failed: {exc.message}"
    record["ended"] = time.time()
    _write_status(jobdir, "in", record)
    return record


def inside(jobdir: Path, source: Path) -> bool:
    """True when SOURCE, and every file below it, stays inside the job's directory once
    links are followed."""
    root = os.path.realpath(jobdir)

    def ok(p: str) -> bool:
        real = os.path.realpath(p)
        return real == root or real.startswith(root + os.sep)

    if not ok(str(source)):
        return False
    if source.is_dir():
        for dirpath, dirs, files in os.walk(source):
            if not all(ok(os.path.join(dirpath, n)) for n in dirs + files):
                return False
    return True


def stage_out(store: BlobStore, jobdir: Path, spec: StagingSpec) -> PhaseStatus:
    record = PhaseStatus(state="running", transfers=[], started=time.time())
    _write_status(jobdir, "out", record)
    failed = []
    for item in spec.get("out", []):
        source = jobdir / item["source"]
        row = Transfer(source=item["source"], dest=item["dest"], ok=False)
        if not source.exists() and not source.is_symlink():
            row["ok"], row["error"] = False, "not produced by the job"
            failed.append(f"{item['source']} (missing)")
        elif not inside(jobdir, source):
            row["ok"], row["error"] = False, "links outside the job's directory"
            failed.append(f"{item['source']} (links outside the job's directory)")
        else:
            try:
                entries = store.put(source, parse_blob_url(item["dest"]), create=False)
                row["ok"], row["files"] = True, len(entries)
                row["bytes"] = sum(e.size for e in entries)
            except CloudHPCError as exc:
                row["ok"], row["error"] = False, exc.message
                failed.append(f"{item['source']} ({exc.message})")
        record["transfers"].append(row)
    record["state"] = "failed" if failed else "done"
    if failed:
        record["error"] = "stage-out incomplete: " + "; ".join(failed)
    record["ended"] = time.time()
    _write_status(jobdir, "out", record)
    return record


def main(argv: list[str]) -> int:
    root, meta_text, phase, jobdir_text = argv[:4]
    jobdir, meta = Path(jobdir_text), Path(meta_text)
    from cloudhpc.storage.blob import BlobStore

    if not _root_only(meta):
        print(f"cloudhpc: {meta} is not cloudhpc's; refusing to stage", file=sys.stderr)
        return 1
    spec: StagingSpec = json.loads((meta / "staging.json").read_text())
    credential = meta / "credential.json"
    if (meta / "grant.json").exists():  # a user's job: blob tokens, no account key
        if not credential.exists():
            error = ("stage-in failed: this job's blob tokens were not made at its start "
                     "(see the cluster's logs/grant.log)")
            _write_status(jobdir, phase, PhaseStatus(state="failed", transfers=[], error=error))
            print(f"cloudhpc: {error}", file=sys.stderr)
            return 1
        data = json.loads(credential.read_text())
        store = BlobStore(BlobAccount(data["account"], "", data["endpoint"]), sas=data["sas"])
    else:
        store = BlobStore(BlobAccount.load(Path(root) / "etc" / "blob.json"))
    record = stage_in(store, jobdir, spec) if phase == "in" else stage_out(store, jobdir, spec)
    if record["state"] != "done":
        print(f"cloudhpc: {record.get('error', 'staging failed')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
