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


LOGIN_USER = "cht-login"


@pytest.fixture(scope="module")
def login_cluster(home: object) -> Iterator[Cluster]:
    """A cluster that declares a login node set (issue 13, item 5)."""
    from tests.conftest import template

    spec = template("t-login", "198.19.27.0/24", nodeset="lg", count=1)
    spec["login"] = [{"name": "login", "count": 1}]
    c = Cluster.up(spec)
    try:
        yield c
    finally:
        subprocess.run(["tmux", "kill-session", "-t", "cloudhpc-login-test"],
                       capture_output=True)
        c.down()
        subprocess.run(["userdel", LOGIN_USER], capture_output=True)


def test_a_login_node_is_where_users_log_in_and_submit(login_cluster: Cluster) -> None:
    """`cloudhpc shell` lands on the login node (not the head), as the user, in the shared
    home; a job submitted there runs on a compute node; the login node runs no slurmd and is
    not a Slurm node."""
    c = login_cluster
    assert [n.name for n in c.plan.login()] == ["login-1"]
    login = next(n for n in c.status() if n.name == "login-1")
    assert login.role == "login" and login.state == "running"
    assert "login-1" not in c.exec("head", ["sinfo", "-h", "-N", "-o", "%N"],
                                   check=True).stdout
    home = os.environ["CLOUDHPC_HOME"]
    session = "cloudhpc-login-test"
    cmd = f"{sys.executable} -m cloudhpc.cli shell --user {LOGIN_USER} -c {c.name}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "30",
                    "-e", f"CLOUDHPC_HOME={home}", cmd], check=True)
    subprocess.run(["tmux", "send-keys", "-t", session,
                    "echo WHO=$(id -un) AT=$(hostname) IN=$PWD; "
                    "sbatch --wait -o out.txt --wrap hostname >/dev/null; "
                    "echo RAN=$(cat out.txt) SLURMD=$(pgrep -x slurmd || echo none) "
                    "END$((1+1))", "Enter"], check=True)
    text = screen(session, "END2", timeout=60)  # the typed line shows END$((1+1))
    assert f"WHO={LOGIN_USER} AT=login-1 IN=/home/{LOGIN_USER}" in text, text
    assert "RAN=lg-1 SLURMD=none END2" in text, text
    assert (c.dir.homes / LOGIN_USER / "out.txt").stat().st_uid != 0  # the user's own
