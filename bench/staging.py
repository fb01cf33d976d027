"""Job data staging through the cluster's blob store, beside a direct azure-storage-blob
parallel transfer of the same data to the same service in the same run.

For each shape (one 1 GiB file; 1,000 files of 1 MiB) it reports, in seconds and MB/s:
  direct_upload / direct_download: the SDK on this machine (max_concurrency=4 per blob,
      8 blobs at once), no checksums;
  stage_in / stage_out: a job's --stage-in and --stage-out as measured by the job's own
      staging record (SHA-256 verified end to end, durable writes).
Target: cloudhpc's path within 1.2x of the direct transfer.
Usage: python bench/staging.py [--mib 1024] [--files 1000]   Prints JSON."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import bench_home, cluster, template

from cloudhpc.cluster import Cluster
from cloudhpc.jobs.model import JobState
from cloudhpc.storage.urls import parse_blob_url


def make_data(root: Path, mib: int, files: int) -> None:
    root.mkdir(parents=True)
    size = mib * 1024 * 1024 // files
    for i in range(files):
        with open(root / f"part-{i:05d}.bin", "wb") as fh:
            left = size
            while left:
                n = min(left, 1 << 20)
                fh.write(os.urandom(n))
                left -= n


def direct(c: Cluster, local: Path, container: str, back: Path) -> dict[str, float]:
    service = c.storage.service  # the same client library and endpoint, used directly
    service.create_container(container)
    client = service.get_container_client(container)
    files = sorted(local.iterdir())

    def up(f: Path) -> None:
        with open(f, "rb") as fh:
            client.upload_blob(f.name, fh, overwrite=True, max_concurrency=4)

    def down(f: Path) -> None:
        with open(back / f.name, "wb") as fh:
            client.download_blob(f.name, max_concurrency=4).readinto(fh)

    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(up, files))
    upload = time.monotonic() - began
    back.mkdir()
    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(down, files))
    return {"direct_upload": upload, "direct_download": time.monotonic() - began}


def staged(c: Cluster, container: str, tmp: Path) -> dict[str, float]:
    c.storage.mkdir(f"{container}-out")
    script = tmp / "noop.sh"
    script.write_text("#!/bin/sh\ndu -sb data\n")
    job = c.submit(script, stage_in=[f"blob://{container}/data:data"],
                   stage_out=[f"data:blob://{container}-out/data"], wait=True, timeout=1800)
    if job.state is not JobState.COMPLETED or not job.staging:
        raise SystemExit(f"staging job failed: {job.reason}")

    def seconds(phase: str) -> float:
        record = job.staging[phase]  # type: ignore[index]
        return float(record["ended"] - record["started"])

    return {"stage_in": seconds("in"), "stage_out": seconds("out")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=1000)
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    with bench_home(), cluster(template("b-stage", "198.19.27.0/24", 1)) as c, \
            tempfile.TemporaryDirectory(prefix="cloudhpc-staging-") as tmp_text:
        tmp = Path(tmp_text)
        for shape, files in (("one_file", 1), ("many_files", args.files)):
            local = tmp / shape
            make_data(local, args.mib, files)
            name = shape.replace("_", "-")
            # the job's input is stored first, so that both paths meet the same store
            c.storage.put(local, parse_blob_url(f"blob://staged-{name}/data"))
            times = direct(c, local, f"direct-{name}", tmp / f"{shape}-back")
            c.storage.rm(parse_blob_url(f"blob://direct-{name}"), recursive=True)
            times.update(staged(c, f"staged-{name}", tmp))
            mb = args.mib * 1024 * 1024 / 1e6
            results.append({
                "shape": shape, "files": files, "mib": args.mib,
                **{k: round(v, 2) for k, v in times.items()},
                **{f"{k}_mb_s": round(mb / v, 1) for k, v in times.items()},
                "stage_in_vs_direct": round(times["stage_in"] / times["direct_download"], 2),
                "stage_out_vs_direct": round(times["stage_out"] / times["direct_upload"], 2),
            })
            shutil.rmtree(local)
            shutil.rmtree(tmp / f"{shape}-back")
            for container in c.storage.containers():
                c.storage.rm(parse_blob_url(f"blob://{container}"), recursive=True)
    print(json.dumps({"benchmark": "staging", "target_ratio": 1.2, "results": results},
                     indent=1))


if __name__ == "__main__":
    main()
