"""A daemon's share of the CPU while it starts.

Linux shares the CPU between sessions ("autogroups", on by default), not between processes:
every daemon the supervisor starts has a session of its own, so a process's nice value
weighs only against processes of its own session. A session's weight is set through
/proc/self/autogroup. Daemons no one waits for at `up` (the API, Azurite, the reconciler)
start with the lowest weight, so that the ones `up` waits for (MariaDB, slurmdbd,
slurmctld, slurmd) get the machine's cores; each goes back to the normal weight once it
serves. Measured on this 2-core machine, `up` of 4 nodes: 2.7 s -> 1.9 s
(bench/cluster_up.py). Where the kernel has no autogroups, nothing changes."""

from __future__ import annotations

AUTOGROUP = "/proc/self/autogroup"
LOW = 19


def set_session_nice(nice: int) -> bool:
    """The weight of this process's session (autogroup): False where there is none."""
    try:
        with open(AUTOGROUP, "w") as fh:
            fh.write(str(nice))
        return True
    except OSError:
        return False


def background(argv: list[str]) -> list[str]:
    """ARGV run at the lowest weight when started in a session of its own (Runner.start):
    the session's weight (a nice value alone would weigh nothing against other sessions)
    and its own nice value."""
    return ["sh", "-c", f'echo {LOW} > {AUTOGROUP} 2>/dev/null; exec nice -n {LOW} "$@"',
            "sh", *argv]


def serving() -> None:
    """Called by a daemon that started at LOW once it serves: the normal weight again."""
    set_session_nice(0)
