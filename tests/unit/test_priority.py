"""Background work's share of the CPU, as the kernel applies it (autogroups)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from cloudhpc.node import priority
from cloudhpc.runner import Runner

pytestmark = pytest.mark.skipif(not os.path.exists(priority.AUTOGROUP),
                                reason="this kernel has no autogroups")


def weight_of(argv: list[str], tmp_path: Path) -> tuple[str, int]:
    """The session weight and nice value of ARGV started as Runner.start starts it."""
    pid = Runner().start(argv, tmp_path / "out.log")
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
            assert time.monotonic() < deadline, "sleep did not start"
            time.sleep(0.01)
        group = Path(f"/proc/{pid}/autogroup").read_text().split()[-1]
        nice = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
        return group, nice
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_background_work_weighs_least_against_other_sessions(tmp_path: Path) -> None:
    # `nice` alone (how the accounting spare was first copied) leaves the session's weight
    assert weight_of(["nice", "-n", "19", "sleep", "30"], tmp_path) == ("0", 19)
    assert weight_of(priority.background(["sleep", "30"]), tmp_path) == ("19", 19)
