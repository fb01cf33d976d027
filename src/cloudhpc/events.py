"""One append-only event log per cluster (JSON lines): node requested, launched, registered,
failed, replaced, suspended; job submitted, started, ended. Standard library only, because
the power-save programs that write it must start fast."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class EventLog:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"time": round(time.time(), 3), "kind": kind, **fields}
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one write on an O_APPEND file: lines never interleave
        finally:
            os.close(fd)
        return event

    def read(self, since: float = 0.0, kinds: set[str] | None = None) -> list[dict[str, Any]]:
        return list(self._iter(0, since, kinds)[0])

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
