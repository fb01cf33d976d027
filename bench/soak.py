"""The long chaos soak: 15 minutes of random faults on a cluster of its own while jobs
stream in through the CLI and the API; prints the ledger as JSON (lost, duplicated and
wrong-id must be 0).

    python bench/soak.py [--minutes 15] [--seed 2026] [--rate 6]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

TEMPLATE = {"version": 1, "name": "bench-soak", "network": {"cidr": "198.19.41.0/24"},
            "compute": [{"name": "hpc", "size": "Standard_D4s_v5", "min": 2, "max": 2},
                        {"name": "burst", "size": "Standard_D4s_v5", "min": 0, "max": 2,
                         "idle_timeout": 30}],
            "storage": {"blob": {"enabled": True}}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--rate", type=float, default=6)
    args = parser.parse_args()
    os.environ.setdefault("CLOUDHPC_HOME", tempfile.mkdtemp(prefix="cloudhpc-soak-"))
    from cloudhpc.cluster import Cluster
    from cloudhpc.soak import Soak

    print(f"seed {args.seed}", file=sys.stderr, flush=True)
    c = Cluster.up(TEMPLATE)
    began = time.monotonic()
    kept = ""
    try:
        ledger = Soak(c, args.seed, args.minutes, args.rate,
                      say=lambda line: print(line, file=sys.stderr, flush=True)).run()
        if not ledger.ok:  # keep what explains it before the cluster goes
            kept = tempfile.mkdtemp(prefix="cloudhpc-soak-logs-")
            shutil.copytree(c.dir.logs, Path(kept) / "logs")
            for name in ("events.jsonl", "slurm/jobcomp.txt"):
                shutil.copy(c.dir.root / name, Path(kept) / Path(name).name)
    finally:
        c.down()
    out = asdict(ledger)
    out["faults_injected"] = sum(1 for f in ledger.faults if f["done"])
    out["faults"] = [f"{f['at']} s {f['kind']} {f['node']} {f['daemon']}".rstrip()
                     for f in ledger.faults if f["done"]]
    out["ok"] = ledger.ok
    out["wall_seconds"] = round(time.monotonic() - began, 1)
    out["logs_kept_in"] = kept
    print(json.dumps(out, indent=1))
    return 0 if ledger.ok else 1


if __name__ == "__main__":
    sys.exit(main())
