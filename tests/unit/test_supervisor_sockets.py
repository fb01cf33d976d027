"""The node supervisor, run for real (no namespaces): a daemon's port listens from the
supervisor's start and through the daemon's restarts, and a daemon not on `up`'s path
starts with the least CPU share until it serves."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# the daemon: slow to start (as the API's imports are), answers one connection with its
# session's CPU weight before and after it says it serves, then exits (and is restarted)
DAEMON = """
import os, socket, time
from cloudhpc.node import priority
time.sleep(1.0)
before = open(priority.AUTOGROUP).read().split()[-1]
priority.serving()
after = open(priority.AUTOGROUP).read().split()[-1]
s = socket.socket(fileno=int(os.environ["CLOUDHPC_LISTEN_FD"]))
c, _ = s.accept()
c.sendall(f"{before} {after}".encode())
c.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    spec = {"name": "t", "dir": str(tmp_path), "env": {"PATH": os.environ["PATH"],
                                                      "PYTHONPATH": os.pathsep.join(sys.path)},
            "daemons": [{"name": "svc", "argv": [sys.executable, "-c", DAEMON],
                         "listen": ["127.0.0.1", port], "low_start": True}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.Popen([sys.executable, "-m", "cloudhpc.node.supervisor",
                             str(tmp_path / "spec.json")], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "run" / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "supervisor not ready"
            time.sleep(0.02)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def ask(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        c.settimeout(20)
        return c.recv(100).decode()


def test_a_port_answers_from_the_supervisors_start_and_through_restarts(
        supervised: int) -> None:
    """A client connecting while the daemon still starts is not refused (it waits in the
    backlog), nor while the daemon restarts after it ended."""
    for _ in range(3):  # the daemon ends after each answer and is started again
        before, after = ask(supervised).split()
        assert int(after) == 0  # back to the normal share once serving


def test_a_daemon_off_ups_path_starts_with_the_least_cpu_share(supervised: int) -> None:
    if not Path("/proc/self/autogroup").exists():
        pytest.skip("this kernel has no autogroups")
    before, after = ask(supervised).split()
    assert (int(before), int(after)) == (19, 0)
