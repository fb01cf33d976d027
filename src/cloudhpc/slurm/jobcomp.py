"""The one reader of Slurm's record of finished jobs (jobcomp/filetxt, one line per job end):
the reconciler and the API's view follow it, the job service searches it. Parsing and the
ownership rule are slurm.client.parse_jobcomp."""

from __future__ import annotations

from pathlib import Path


class FinishedJobs:
    def __init__(self, path: Path | str, from_end: bool = False) -> None:
        """FROM_END: `new()` starts with what is written after now."""
        self.path = Path(path)
        self.offset = 0
        if from_end:
            try:
                self.offset = self.path.stat().st_size
            except OSError:
                self.offset = 0

    def new(self) -> str:
        """Whole lines written since the last call (a line being written waits)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return ""
        end = data.rfind(b"\n") + 1
        self.offset += end
        return data[:end].decode(errors="replace")

    def text(self, job_id: int | None = None) -> str:
        """The whole record, or only the lines of JOB_ID (a text search, not a parse)."""
        try:
            text = self.path.read_text(errors="replace")
        except OSError:
            return ""
        if job_id is None:
            return text
        needle = f"JobId={job_id} "
        return "\n".join(line for line in text.splitlines() if line.startswith(needle))

    def ids(self) -> set[int]:
        out = set()
        for line in self.text().splitlines():
            head = line.split(" ", 1)[0]
            if head.startswith("JobId=") and head[6:].isdigit():
                out.add(int(head[6:]))
        return out
