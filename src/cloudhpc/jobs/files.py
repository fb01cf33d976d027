"""Reading what a job wrote, with the job's owner's privileges.

A job's directory is its user's: anything in it may be a link the job planted (to a root-only
file, to the blob account key). cloudhpc never opens such a file as root: it reads it through
`setpriv` as the job's uid and gid, with no supplementary groups, so the kernel allows
exactly what the user could read anyway."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from cloudhpc.runner import Result

Run = Callable[[Sequence[str]], Result]  # runs argv on the head node, never raises

LOG_LIMIT = 64 << 20  # the last 64 MiB of an output file
STATUS_LIMIT = 1 << 20


def read_as(run: Run, uid: int, gid: int, path: str, limit: int = LOG_LIMIT) -> str | None:
    """The last LIMIT bytes of PATH (as the head node sees it: /shared/..., /home/...) as
    UID:GID would read them (None: no such file, or not theirs to read)."""
    if uid < 0 or not path.startswith("/"):
        return None
    result = run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
                  "tail", "-c", str(limit), "--", path])
    if result.returncode != 0:
        return None
    return result.stdout.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_status(run: Run, uid: int, gid: int, path: str) -> dict[str, Any]:
    """A job's staging status (cloudhpc.storage.spec.StagingStatus), written by the job
    itself: untrusted, so checked for shape key by key."""
    text = read_as(run, uid, gid, path, STATUS_LIMIT)
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    for phase in ("in", "out"):
        part = data.get(phase)
        if isinstance(part, dict):
            out[phase] = {k: part[k] for k in ("state", "transfers", "error", "started",
                                                "ended") if k in part}
    return out
