"""The one seam that runs Slurm commands (on the head node) and reads their JSON output."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from cloudhpc.errors import CommandError, JobError
from cloudhpc.runner import Result

Exec = Callable[[Sequence[str]], Result]


class SlurmClient:
    """Slurm commands through `exec_head`, which runs argv on the head node."""

    def __init__(self, exec_head: Exec) -> None:
        self.exec_head = exec_head

    def _json(self, argv: list[str]) -> dict[str, Any]:
        result = self.exec_head(argv)
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self._json(["sinfo", "--json"])["nodes"]
        return nodes

    def jobs(self, job_ids: Sequence[int] = ()) -> list[dict[str, Any]]:
        # Slurm 22.05 ignores filter options together with --json, so filter here.
        jobs: list[dict[str, Any]] = self._json(["squeue", "--json", "--states=all"])["jobs"]
        if job_ids:
            wanted = set(job_ids)
            jobs = [j for j in jobs if j.get("job_id") in wanted]
        return jobs

    def job_line(self, job_id: int) -> str | None:
        """One job as `scontrol -o show job` prints it (cheap: one job, not the queue)."""
        try:
            out = self.exec_head(["scontrol", "-o", "show", "job", str(job_id)]).stdout
        except CommandError as exc:
            if "Invalid job id" in exc.stderr or "not found" in exc.stderr:
                return None
            raise
        return out.strip() or None

    def sbatch(self, options: list[str], script: str) -> int:
        out = self.exec_head(["sbatch", "--parsable", *options, script]).stdout.strip()
        match = re.match(r"^(\d+)", out)
        if not match:
            raise JobError(f"sbatch printed no job id: {out!r}")
        return int(match.group(1))

    def cancel(self, job_id: int) -> None:
        self.exec_head(["scancel", str(job_id)])

    def ping(self) -> bool:
        try:
            return "UP" in self.exec_head(["scontrol", "ping"]).stdout
        except CommandError:
            return False
