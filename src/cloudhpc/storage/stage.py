"""Job data staging, run inside the job on its first node by the job's wrapper script:

    python -m cloudhpc.storage.stage CLUSTER_ROOT in JOBDIR    # before the user's script
    python -m cloudhpc.storage.stage CLUSTER_ROOT out JOBDIR   # after it, even if it failed

The request is JOBDIR/.cloudhpc/staging.json (written at submit); what happened goes to
JOBDIR/.cloudhpc/status.json, which `cloudhpc job ID` shows. Transfers retry with back-off
(the client's retry policy: 4 tries, 1-8 s apart) and then fail the job with a reason that
names the transfer; a job never starts with inputs missing."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudhpc.errors import CloudHPCError
from cloudhpc.storage.account import BlobAccount
from cloudhpc.storage.urls import parse_blob_url

if TYPE_CHECKING:
    from cloudhpc.storage.blob import BlobStore

META = ".cloudhpc"
EXE_CACHE = "/shared/.cloudhpc/exe"


def spec_path(jobdir: Path) -> Path:
    return jobdir / META / "staging.json"


def status_path(jobdir: Path) -> Path:
    return jobdir / META / "status.json"


def read_status(jobdir: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(status_path(jobdir).read_text())
        return data
    except (OSError, ValueError):
        return {}


def _write_status(jobdir: Path, phase: str, record: dict[str, Any]) -> None:
    status = read_status(jobdir)
    status[phase] = record
    tmp = status_path(jobdir).with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=1))
    tmp.replace(status_path(jobdir))


def _fetch_exe(store: BlobStore, url_text: str, cache_root: Path) -> tuple[str, bool]:
    """Fetch an executable once into the shared cache (keyed by its checksum); reuse it."""
    url = parse_blob_url(url_text, what="executable")
    entries = store.ls(url)
    entry = next((e for e in entries if e.name == str(url)), None)
    if entry is None:
        raise CloudHPCError(f"executable {url} is not a blob")
    key = entry.sha256[:16] or f"{int(entry.modified)}-{entry.size}"
    target = cache_root / key / Path(url.path).name
    if target.exists():
        return str(target.parent), True
    tmp = cache_root / f".{key}.{os.getpid()}"
    store.get(url, tmp / target.name)
    (tmp / target.name).chmod(0o755)
    try:
        tmp.rename(cache_root / key)
    except OSError:  # another job fetched it meanwhile: keep theirs
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return str(target.parent), False


def stage_in(store: BlobStore, jobdir: Path, spec: dict[str, Any],
             cache_root: Path) -> dict[str, Any]:
    record: dict[str, Any] = {"state": "running", "transfers": [], "started": time.time()}
    _write_status(jobdir, "in", record)
    try:
        for item in spec.get("in", []):
            began = time.monotonic()
            url = parse_blob_url(item["source"])
            dest = jobdir / item["dest"]
            files = store.get(url, dest)
            record["transfers"].append({
                "source": item["source"], "dest": item["dest"], "files": len(files),
                "bytes": sum(f.stat().st_size for f in files),
                "seconds": round(time.monotonic() - began, 3), "ok": True})
        paths = []
        cache_root.mkdir(parents=True, exist_ok=True)
        for exe in spec.get("exe", []):
            directory, cached = _fetch_exe(store, exe, cache_root)
            paths.append(directory)
            record["transfers"].append({"source": exe, "dest": directory, "cached": cached,
                                        "ok": True})
        (jobdir / META / "env").write_text(
            "".join(f'export PATH="{p}:$PATH"\n' for p in paths))
        record["state"] = "done"
    except CloudHPCError as exc:
        record.update(state="failed", error=f"stage-in failed: {exc.message}")
    record["ended"] = time.time()
    _write_status(jobdir, "in", record)
    return record


def stage_out(store: BlobStore, jobdir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"state": "running", "transfers": [], "started": time.time()}
    _write_status(jobdir, "out", record)
    failed = []
    for item in spec.get("out", []):
        source = jobdir / item["source"]
        row: dict[str, Any] = {"source": item["source"], "dest": item["dest"]}
        if not source.exists():
            row.update(ok=False, error="not produced by the job")
            failed.append(f"{item['source']} (missing)")
        else:
            try:
                entries = store.put(source, parse_blob_url(item["dest"]), create=False)
                row.update(ok=True, files=len(entries), bytes=sum(e.size for e in entries))
            except CloudHPCError as exc:
                row.update(ok=False, error=exc.message)
                failed.append(f"{item['source']} ({exc.message})")
        record["transfers"].append(row)
    record["state"] = "failed" if failed else "done"
    if failed:
        record["error"] = "stage-out incomplete: " + "; ".join(failed)
    record["ended"] = time.time()
    _write_status(jobdir, "out", record)
    return record


def main(argv: list[str]) -> int:
    root, phase, jobdir_text = argv[:3]
    jobdir = Path(jobdir_text)
    from cloudhpc.storage.blob import BlobStore

    spec = json.loads(spec_path(jobdir).read_text())
    credential = jobdir / META / "credential.json"
    if credential.exists():  # a user's job: container tokens, no account key
        data = json.loads(credential.read_text())
        store = BlobStore(BlobAccount(data["account"], "", data["endpoint"]), sas=data["sas"])
    else:
        store = BlobStore(BlobAccount.load(Path(root) / "etc" / "blob.json"))
    if phase == "in":
        record = stage_in(store, jobdir, spec, Path(EXE_CACHE))
    else:
        record = stage_out(store, jobdir, spec)
    if record["state"] != "done":
        print(f"cloudhpc: {record['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
