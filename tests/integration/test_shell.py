"""`cloudhpc shell` through a real terminal (tmux): a login shell on the head as a user, with
the home every node shares."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from cloudhpc.cluster import Cluster
from cloudhpc.errors import CloudHPCError

USER = "cht-shell"


@pytest.fixture()
def tmux(cluster: Cluster) -> Iterator[str]:
    name = "cloudhpc-shell-test"
    try:
        yield name
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        subprocess.run(["userdel", USER], capture_output=True)


def screen(session: str, want: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                              capture_output=True, text=True).stdout
        if want in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{want!r} not on the screen:\n{text}")


def test_shell_as_a_user_in_a_real_terminal(cluster: Cluster, tmux: str) -> None:
    home = os.environ["CLOUDHPC_HOME"]
    cmd = f"{sys.executable} -m cloudhpc.cli shell --user {USER} -c {cluster.name}"
    subprocess.run(["tmux", "new-session", "-d", "-s", tmux, "-x", "120", "-y", "30",
                    "-e", f"CLOUDHPC_HOME={home}", cmd], check=True)
    subprocess.run(["tmux", "send-keys", "-t", tmux,
                    "echo WHO=$(id -un) AT=$(hostname) IN=$PWD; touch here.txt", "Enter"],
                   check=True)
    text = screen(tmux, f"WHO={USER} AT=head IN=/home/{USER}")
    assert "Traceback" not in text
    # the home is the one every node mounts: the file is there on a compute node
    seen = cluster.exec("hpc-1", ["ls", f"/home/{USER}"], check=True).stdout
    assert "here.txt" in seen
    assert (cluster.dir.homes / USER / "here.txt").stat().st_uid != 0  # the user's own


def test_shell_refuses_root_and_system_accounts(cluster: Cluster) -> None:
    for name in ("root", "daemon", "nobody"):
        with pytest.raises(CloudHPCError):
            cluster.shell_argv("head", name)
