"""The node supervisor's restart pause and its note that a daemon is being restarted (what
the local provider reads to tell a node that heals itself from one that is down)."""

from __future__ import annotations

import time
from pathlib import Path

from cloudhpc.node.supervisor import RESTART_GRACE, RESTARTING_SUFFIX, STABLE, Daemon
from cloudhpc.providers.local import processes


def test_the_pause_doubles_while_a_daemon_keeps_exiting_and_resets_once_it_ran(
        tmp_path: Path) -> None:
    d = Daemon({"name": "slurmd", "argv": ["true"]}, tmp_path, tmp_path)
    pauses = []
    for _ in range(7):
        d.started_at = time.monotonic()  # exits right after each start
        d.exiting()
        pauses.append(d.pause)
    assert pauses == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    # before, the count of starts over the node's life set the pause: every crash of a
    # daemon that had been restarted six times, however long ago, kept it down 5 s
    d.started_at = time.monotonic() - STABLE
    d.exiting()
    assert d.pause == 0.2


def test_the_note_holds_through_the_pause_and_a_grace(tmp_path: Path) -> None:
    d = Daemon({"name": "slurmd", "argv": ["true"]}, tmp_path, tmp_path)
    before = time.time()
    d.exiting()
    note = tmp_path / f"slurmd{RESTARTING_SUFFIX}"
    until = float(note.read_text())
    assert before + d.pause + RESTART_GRACE - 0.001 <= until  # written to the ms
    assert until <= time.time() + d.pause + RESTART_GRACE + 0.001
    dead = 2 ** 22 + 1  # above pid_max's default: no such process
    assert processes.restarting(dead, note)
    note.write_text(f"{time.time() - 1}\n")  # the daemon stayed down past it
    assert not processes.restarting(dead, note)
    note.unlink()
    assert not processes.restarting(dead, note)
