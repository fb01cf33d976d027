"""One append-only event log per cluster (JSON lines). Every kind is an `EventKind`; the
README's table lists them all (a unit test holds the two together). Standard library only,
because the power-save programs that write it must start fast."""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloudhpc.secretfile import append_private


class EventKind(enum.StrEnum):
    NODE_REQUESTED = "node_requested"      # Slurm asked for nodes (ResumeProgram)
    NODE_LAUNCHED = "node_launched"        # the provider created a node
    NODE_REGISTERED = "node_registered"    # a node joined Slurm
    NODE_IDLE = "node_idle"
    NODE_SUSPENDING = "node_suspending"    # Slurm powers nodes down (SuspendProgram)
    NODE_TERMINATED = "node_terminated"    # the provider removed a node
    NODE_SUSPENDED = "node_suspended"      # Slurm shows it powered down
    NODE_DOWN = "node_down"
    NODE_FAILED = "node_failed"            # launch refused (capacity, quota) or lost
    NODE_REPLACED = "node_replaced"        # a lost static node made anew
    NODE_RETRY = "node_retry"              # eligible again after the cooldown
    NODE_REJOINED = "node_rejoined"        # its slurmd told to register again (not taken)
    NODE_RESUMED = "node_resumed"          # drained by a crash's duplicate launch, resumed
    ORPHAN_REMOVED = "orphan_removed"
    POWER_ERROR = "power_error"            # a power-save program failed
    JOB_SUBMITTED = "job_submitted"
    JOB_STARTED = "job_started"
    JOB_ENDED = "job_ended"
    JOB_RESUBMITTED = "job_resubmitted"    # lost by slurmctld in a crash, submitted again
    JOB_RELEASED = "job_released"          # requeued after a node failure, let run now
    NODESET_SCALED = "nodeset_scaled"
    CHAOS_KILL_NODE = "chaos_kill_node"
    CHAOS_KILL_DAEMON = "chaos_kill_daemon"


class EventLog:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def emit(self, kind: EventKind, **fields: Any) -> dict[str, Any]:
        event = {"time": round(time.time(), 3), "kind": kind.value, **fields}
        # one write on an O_APPEND file: lines never interleave
        append_private(self.path, (json.dumps(event, separators=(",", ":")) + "\n").encode())
        return event

    def read(self, since: float = 0.0, kinds: set[str] | None = None) -> list[dict[str, Any]]:
        return list(self._iter(0, since, kinds)[0])

    def tail(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Events written after byte OFFSET, and the offset to read from next time."""
        events, end = self._iter(offset, 0.0, None)
        return list(events), end

    def _iter(self, offset: int, since: float,
              kinds: set[str] | None) -> tuple[Iterator[dict[str, Any]], int]:
        if not self.path.exists():
            return iter(()), offset
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        events = []
        # emit() writes compact JSON: a line of another kind is skipped without parsing it
        needles = [f'"kind":"{k}"'.encode() for k in kinds] if kinds is not None else []
        for raw in data[:end].splitlines():
            if needles and not any(n in raw for n in needles):
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if event.get("time", 0) >= since and (kinds is None or event["kind"] in kinds):
                events.append(event)
        return iter(events), offset + end

    def follow(self, since: float = 0.0, poll: float = 0.25,
               kinds: set[str] | None = None) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            events, offset = self._iter(offset, since, kinds)
            yield from events
            time.sleep(poll)
