"""Job ids never go back after a crash. slurmctld saves its state a few seconds after a
change; started again, it takes the next job id from that save (job_mgr.c,
load_all_job_state: job_id_sequence = MAX(saved id, FirstJobId)), so ids issued in the
seconds before a crash would be issued again, and one job's output would show under
another's id. Before every start of slurmctld (its supervisor runs this first) FirstJobId in
slurm.conf is set above the highest id this cluster has seen: submissions slurmctld logged
(its own lines, which hold no job name) and cloudhpc's record of submissions. Not the
jobcomp record: a job name with a newline can forge a line there, and a forged id near
MaxJobId would make Slurm wrap around to ids in use.

    python -m cloudhpc.slurm.jobids CLUSTER_DIR   (then exec slurmctld)
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from pathlib import Path

# slurmctld's own lines for a job it accepted (batch, and salloc/srun allocations)
ACCEPTED = re.compile(rb"^\[[^\]\n]*\] (?:sched: )?_slurm_rpc_(?:submit_batch_job|"
                      rb"allocate_resources):? JobId=(\d+) ", re.M)
LINE = re.compile(rb"^FirstJobId=\d+\n", re.M)
MAX_JOB_ID = 0x03ff0000  # Slurm's default MaxJobId
KEPT_LAST_ID = "last-job-id"


def _from_log(path: Path) -> int:
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    ids = [int(a) for a in ACCEPTED.findall(data)]
    return max(ids, default=0)


def _from_records(db: Path, cluster: str) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return 0
    try:
        best = 0
        for query in ("SELECT MAX(job_id), MAX(resubmitted_as) FROM submissions WHERE cluster=?",
                      "SELECT MAX(job_id), 0 FROM jobs WHERE cluster=?"):
            try:
                row = con.execute(query, (cluster,)).fetchone()
            except sqlite3.Error:
                continue
            best = max([best, *(int(v) for v in row if v)])
        return best
    finally:
        con.close()


def _kept(root: Path) -> int:
    """The highest id of an earlier cluster of this name whose accounting was kept
    (cloudhpc.slurm.accounting.keep): its jobs are in the database this one continues."""
    try:
        text = (root / "accounting" / KEPT_LAST_ID).read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def highest_seen(root: Path) -> int:
    logs = root / "logs"
    return max(_from_log(logs / "slurmctld.log"),
               _from_records(root.parent.parent / "state.db", root.name), _kept(root))


def set_first_job_id(conf: Path, first: int) -> None:
    text = conf.read_bytes()
    line = f"FirstJobId={first}\n".encode()
    new = LINE.sub(line, text) if LINE.search(text) else text + line
    if new != text:
        tmp = conf.with_name(f".{conf.name}.{os.getpid()}")
        tmp.write_bytes(new)
        os.replace(tmp, conf)


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    first = highest_seen(root) + 1
    if first < MAX_JOB_ID:
        set_first_job_id(root / "etc" / "slurm" / "slurm.conf", first)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
