"""`up`'s wait for Slurm: a Slurm client that finds slurmctld not yet listening tries again
only a second later (slurm_open_controller_conn), and so does a starting slurmd. `up` and
local nodes wait for the file the head's slurmctld start makes once it listens; that file is
made from the head's real socket table (checked here in a network namespace of its own)."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cloudhpc import lifecycle
from cloudhpc.node import bootstrap
from cloudhpc.paths import ClusterDir
from cloudhpc.plan import Plan, make_plan
from cloudhpc.slurm.client import SlurmNode
from cloudhpc.template import Template


def plan() -> Plan:
    return make_plan(Template.model_validate({
        "version": 1, "name": "demo",
        "compute": [{"name": "hpc", "size": "Standard_D4s_v5", "min": 2, "max": 2}]}))


class RecordingSlurm:
    """Answers as Slurm would once it listens; records when it was asked."""

    def __init__(self, listening: Path) -> None:
        self.listening = listening
        self.asked_before_listening = 0
        self.asked = 0

    def nodes(self) -> list[SlurmNode]:
        self.asked += 1
        if not self.listening.exists():
            self.asked_before_listening += 1
            time.sleep(1.0)  # what a real client does: a second until it tries again
            return []
        return [SlurmNode("hpc-1", "idle"), SlurmNode("hpc-2", "idle")]

    def ping(self) -> bool:
        return self.listening.exists()


def test_up_asks_slurm_only_once_slurmctld_listens(tmp_path: Path) -> None:
    listening = tmp_path / "slurmctld.listening"
    slurm = RecordingSlurm(listening)
    threading.Timer(0.3, listening.touch).start()
    lifecycle.wait_idle(plan(), slurm, 10, listening)  # type: ignore[arg-type]
    assert slurm.asked_before_listening == 0
    assert slurm.asked == 1


def test_up_asks_slurm_anyway_when_the_file_never_comes(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    listening = tmp_path / "slurmctld.listening"
    monkeypatch.setattr(lifecycle, "LISTEN_WAIT", 0.2)
    slurm = RecordingSlurm(listening)
    threading.Timer(0.5, listening.touch).start()
    lifecycle.wait_idle(plan(), slurm, 10, listening)  # type: ignore[arg-type]
    assert slurm.asked_before_listening >= 1 and slurm.asked >= 2


def test_local_slurmd_starts_once_slurmctld_listens_azure_slurmd_at_once(tmp_path: Path) -> None:
    cdir = ClusterDir(tmp_path / "c")
    node = plan().node("hpc-1")
    assert node is not None
    local = bootstrap.slurmd_argv(node, cdir, local=True)
    assert str(bootstrap.ctld_listening(cdir)) in local[-1]
    assert local[-1].endswith("exec slurmd -D -N hpc-1")
    assert bootstrap.slurmd_argv(node, cdir, local=False) == ["slurmd", "-D", "-N", "hpc-1"]


@pytest.mark.parametrize(("uptime", "slept"), [
    ("5000.90 7.0", "0.11"), ("5000.85 7.0", "0.16"), ("5000.99 7.0", "0.02"),
    ("5000.84 7.0", ""), ("5000.08 7.0", ""), ("5000.00 7.0", "")])
def test_a_dynamic_slurmd_starts_clear_of_an_uptime_tick(tmp_path: Path, uptime: str,
                                                         slept: str) -> None:
    """How long the shell waits before `exec slurmd -b` for a given kernel uptime: past
    the next whole second when it is less than 0.15 s away, not at all otherwise."""
    (tmp_path / "uptime").write_text(uptime + "\n")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sleep").write_text("#!/bin/sh\necho \"$1\"\n")
    (fake / "sleep").chmod(0o755)
    out = subprocess.run(["/bin/sh", "-c", bootstrap.after_uptime_tick(str(tmp_path / "uptime"))],
                         capture_output=True, text=True, check=True,
                         env={"PATH": f"{fake}:/usr/bin:/bin"})
    assert (out.stdout.strip(), out.stderr) == (slept, "")


def test_only_a_dynamic_local_slurmd_waits_for_the_tick(tmp_path: Path) -> None:
    cdir = ClusterDir(tmp_path / "c")
    node = plan().node("hpc-1")
    assert node is not None
    assert "/proc/uptime" not in bootstrap.slurmd_argv(node, cdir, local=True)[-1]
    rising = dataclasses.replace(node, dynamic=True)
    assert "/proc/uptime" in bootstrap.slurmd_argv(rising, cdir, local=True)[-1]
    assert bootstrap.slurmd_argv(rising, cdir, local=False)[-1] == "-b"


def test_the_listening_file_appears_when_the_port_listens_not_before(tmp_path: Path) -> None:
    """The watcher of the head's slurmctld start, run in a network namespace of its own with
    a stand-in listening on slurmctld's port after a while (no probe connection is made:
    the stand-in would see it)."""
    marker = tmp_path / "listening"
    marker.touch()  # left by an earlier start: removed first
    watcher = bootstrap._mark_when_listening(marker, seconds=20)
    stand_in = (
        "import socket, sys, time\n"
        f"time.sleep(0.6); s = socket.socket(); s.bind(('0.0.0.0', {bootstrap.SLURMCTLD_PORT}))\n"
        "s.listen(); s.settimeout(3)\n"
        "print('listening', flush=True)\n"
        "try:\n    s.accept(); print('probed', flush=True)\nexcept socket.timeout:\n"
        "    print('not probed', flush=True)\n")
    script = (f"{watcher} python3 -c {shlex.quote(stand_in)} & "
              f"sleep 0.3; [ -e {shlex.quote(str(marker))} ] && echo early; wait")
    out = subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up; " + script],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "early" not in out.stdout
    assert "listening" in out.stdout and "not probed" in out.stdout
    assert marker.exists()


def test_the_watcher_gives_up_when_slurmctld_never_listens(tmp_path: Path) -> None:
    marker = tmp_path / "listening"
    watcher = bootstrap._mark_when_listening(marker, seconds=1)
    subprocess.run(["unshare", "--net", "sh", "-c", watcher], check=True, timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _watching(marker):
        time.sleep(0.1)
    assert not _watching(marker)
    assert not marker.exists()


def _watching(marker: Path) -> bool:
    return subprocess.run(["pgrep", "-f", str(marker)], capture_output=True).returncode == 0


class RecordingBackend:
    """What `up` asks of its backend, in order (a control plane that takes a while)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def create_network(self) -> None:
        self.calls.append("network")

    def start_control_plane(self) -> None:
        self.calls.append("control plane started")

    def wait_control_plane(self, timeout: float = 15.0) -> None:
        self.calls.append("control plane ready")

    def launch(self, nodes: object) -> list[object]:
        self.calls.append("nodes booted")
        return []


def test_nodes_boot_while_the_control_plane_starts(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The control plane's Python takes ~0.4 s to start; the local nodes do not need it to
    boot (the head's reconciler asks it for nodes later), so `up` no longer waits for it
    before booting them, only after."""
    monkeypatch.setattr(bootstrap, "write_cluster_files", lambda plan, cdir: None)
    monkeypatch.setattr(lifecycle, "wait_idle", lambda *a, **k: None)
    monkeypatch.setattr(lifecycle, "wait_port", lambda *a, **k: None)
    backend = RecordingBackend()
    lifecycle.bring_up(plan(), ClusterDir(tmp_path), backend, None)  # type: ignore[arg-type]
    assert backend.calls == ["network", "control plane started", "nodes booted",
                             "control plane ready"]


def test_the_api_listens_before_its_first_view_of_slurm(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """The API's view of the cluster is refreshed by its own thread from the start: the API
    listens at once (during `up` its first refresh waited for slurmctld, ~0.7 s after the
    nodes were idle), and a reader that comes before the first view waits for it."""
    from cloudhpc.api import view as view_module

    refreshed = threading.Event()
    view = view_module.ClusterView(None)  # type: ignore[arg-type]

    def slow_refresh() -> None:
        time.sleep(0.5)  # the worker starting, slurmctld not answering yet
        view.snapshot = view_module.Snapshot(taken=123.0)
        refreshed.set()

    monkeypatch.setattr(view, "refresh", slow_refresh)
    monkeypatch.setattr(view, "_sample", lambda: None)
    began = time.monotonic()
    view.start()
    try:
        assert time.monotonic() - began < 0.4 and not refreshed.is_set()
        assert view.snapshot.taken == 123.0  # waited for the first view
        assert refreshed.is_set()
    finally:
        view.stop()
