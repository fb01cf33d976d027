"""The CLI against real clusters: JSON queries, exec, submit --wait, and `down` after an
`up` that was killed halfway."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cloudhpc.cluster import Cluster
from cloudhpc.plan import short_id
from tests.conftest import template

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "cloudhpc.cli", *args], capture_output=True,
                         text=True, cwd=ROOT, timeout=180, env=dict(os.environ))
    if check:
        assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    return res


def test_status_and_list_json(cluster: Cluster, home: Path) -> None:
    data = json.loads(cli("status", "-c", "t-main", "--json").stdout)
    assert {n["name"]: n["state"] for n in data["nodes"]}["hpc-2"] == "idle"
    names = [c["name"] for c in json.loads(cli("list", "--json").stdout)]
    assert "t-main" in names
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700


def test_exec_runs_inside_the_node(cluster: Cluster) -> None:
    res = cli("exec", "hpc-2", "-c", "t-main", "--", "sh", "-c", "hostname; sinfo -h -o %D")
    assert res.stdout.split() == ["hpc-2", "2"]


def test_submit_wait_prints_output_and_exit_code(cluster: Cluster, tmp_path: Path) -> None:
    ok = cli("submit", "-c", "t-main", "examples/jobs/mpi_pi.sh", "--nodes", "2",
             "--ntasks-per-node", "1", "--wait")
    assert "CHECK OK" in ok.stdout
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\necho oops\nexit 4\n")
    res = cli("submit", "-c", "t-main", str(bad), "--wait", check=False)
    assert res.returncode == 4 and "oops" in res.stdout
    job_id = int(res.stderr.split("job ")[1].split()[0])
    shown = json.loads(cli("job", str(job_id), "-c", "t-main", "--json").stdout)
    assert shown["state"] == "failed" and shown["exit_code"] == 4
    listed = json.loads(cli("jobs", "-c", "t-main", "--json").stdout)
    assert job_id in [j["job_id"] for j in listed]
    assert cli("logs", str(job_id), "-c", "t-main").stdout == "oops\n"


def test_submit_errors_are_one_line(cluster: Cluster) -> None:
    res = cli("submit", "-c", "t-main", "examples/jobs/mpi_pi.sh", "--nodes", "9", check=False)
    assert res.returncode == 1
    assert res.stderr.startswith("error: --nodes 9 is not possible in partition 'hpc'")


def test_down_after_killed_up(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text(yaml.safe_dump(template("t-cli", "198.19.14.0/24", count=24)))
    proc = subprocess.Popen([sys.executable, "-m", "cloudhpc.cli", "up", str(spec)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not Path("/run/netns/t-cli-hpc-3").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Path("/run/netns/t-cli-head").exists()
    res = cli("down", "t-cli")
    assert "removed" in res.stdout
    assert not [p for p in Path("/run/netns").iterdir() if p.name.startswith("t-cli-")]
    assert not Path(f"/sys/class/net/chb{short_id('t-cli')}").exists()
    assert "nothing to do" in cli("down", "t-cli").stdout  # idempotent


def test_storage_commands_and_staged_submit(cluster: Cluster, tmp_path: Path) -> None:
    data = tmp_path / "in"
    data.mkdir()
    (data / "words.txt").write_text("a b a\n")
    cli("storage", "put", "-c", "t-main", str(data), "blob://cli-in/set1")
    listed = json.loads(cli("storage", "ls", "-c", "t-main", "blob://cli-in", "--json").stdout)
    assert [e["name"] for e in listed] == ["blob://cli-in/set1/words.txt"]
    cli("storage", "mkdir", "-c", "t-main", "cli-out")
    job = tmp_path / "count.sh"
    job.write_text("#!/bin/sh\nwc -w < set1/words.txt > n.txt\n")
    cli("submit", "-c", "t-main", str(job), "--stage-in", "blob://cli-in/set1:set1",
        "--stage-out", "n.txt:blob://cli-out/n.txt", "--wait")
    got = tmp_path / "n.txt"
    res = cli("storage", "get", "-c", "t-main", "blob://cli-out/n.txt", str(got), "--json")
    assert json.loads(res.stdout)["files"] == [str(got)]
    assert got.read_text().strip() == "3"
    assert json.loads(cli("storage", "rm", "-c", "t-main", "-r", "blob://cli-in",
                          "--json").stdout) == {"deleted": 1}


def test_storage_bad_input_is_one_clear_line(cluster: Cluster, tmp_path: Path) -> None:
    for args, words in [
        (("storage", "ls", "blob://No_Such"), "not a valid container name"),
        (("storage", "get", "blob://cli-none/x", str(tmp_path / "x")),
         "container does not exist"),
        (("submit", "examples/jobs/wordcount.sh", "--stage-in", "blob://cli-none/x"),
         "container does not exist"),
        (("submit", "examples/jobs/wordcount.sh", "--stage-out", "r.txt:blob://cli-none/r"),
         "does not exist"),
    ]:
        res = cli(*args, "-c", "t-main", check=False)
        assert res.returncode != 0
        first = res.stderr.splitlines()[0]
        assert first.startswith("error:") and words in first, res.stderr
