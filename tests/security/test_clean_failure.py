"""Attack 8: Ctrl-C twice during `up`, hostile templates, hostile blob names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from cloudhpc.plan import short_id

from .conftest import Sec

CLI = [sys.executable, "-m", "cloudhpc.cli"]


def _left(name: str, home: Path) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [ln for ln in netns.splitlines() if ln.startswith(name)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    sid = short_id(name)
    found += [ln.split(":")[1] for ln in links.splitlines()
              if f"chb{sid}" in ln or f"chv{sid}" in ln]
    needle = str(home / "clusters" / name)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmd:
            found.append(f"pid {pid}: {cmd[:80]}")
    return found


@pytest.mark.parametrize("first,second", [(0.6, 0.1), (1.0, 0.05), (0.3, 0.3)])
def test_two_ctrl_c_during_up_then_down_removes_everything(home: Path, tmp_path: Path,
                                                           first: float,
                                                           second: float) -> None:
    tpl = tmp_path / "t.yaml"
    tpl.write_text(yaml.safe_dump({"version": 1, "name": "t-int",
                                   "network": {"cidr": "198.19.17.0/24"},
                                   "compute": [{"name": "hpc", "size": "Standard_D4s_v5",
                                                "min": 3, "max": 3}]}))
    proc = subprocess.Popen([*CLI, "up", str(tpl)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(first)
        proc.send_signal(signal.SIGINT)
        time.sleep(second)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    res = subprocess.run([*CLI, "down", "t-int"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert _left("t-int", home) == []
    assert not (home / "clusters" / "t-int").exists()


@pytest.mark.parametrize("text,word", [
    (b"version: 1\nname: caf\xe9\n", "UTF-8"),
    (b"version: 1\nname: !!python/object/apply:os.system ['touch /tmp/cht-pwned']\n", "tag"),
    (b"version: 1\nname: a\nname: b\ncompute: []\n", "duplicate"),
    (b"version: 1\nnetwork: {cidr: 198.19.99.0/24, cidr: 10.0.0.0/8}\nname: a\n", "duplicate"),
])
def test_hostile_templates_get_one_clear_line(tmp_path: Path, text: bytes, word: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    res = subprocess.run([*CLI, "validate", str(path)], capture_output=True, text=True)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert word.lower() in res.stderr.lower(), res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) <= 3, res.stderr
    assert not Path("/tmp/cht-pwned").exists()


def test_storage_get_stays_inside_its_target(sec: Sec, tmp_path: Path) -> None:
    account = sec.cluster.storage.account
    service = BlobServiceClient(account.endpoint, credential={
        "account_name": account.account, "account_key": account.key})
    container = service.get_container_client("hostile")
    if not container.exists():
        container.create_container()
    victim = tmp_path / "outside.txt"
    victim.write_text("keep me\n")
    names = ["a\\..\\..\\outside.txt", "d/../../outside.txt", "../outside.txt",
             "e/./f/\\x"]
    stored = []
    for name in names:  # Azurite refuses some names itself; the others are the attack
        try:
            container.upload_blob(name, b"evil\n", overwrite=True)
            stored.append(name)
        except HttpResponseError:
            pass
    assert stored, "no hostile blob name could be stored"
    names = stored
    target = tmp_path / "target" / "in"
    target.parent.mkdir()
    for name in names:
        res = subprocess.run([*CLI, "storage", "get", "-c", sec.cluster.name,
                              f"blob://hostile/{name}", str(target)],
                             capture_output=True, text=True)
        assert "Traceback" not in res.stderr, res.stderr
    res = subprocess.run([*CLI, "storage", "get", "-c", sec.cluster.name, "blob://hostile",
                          str(target)], capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert victim.read_text() == "keep me\n"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p == victim or target in p.parents for p in written), written
