"""Attack 1 and 6: a job plants links where cloudhpc reads or writes on its behalf, edits
its own staging request, and reads other users' job directories and homes."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudhpc.storage.urls import parse_blob_url

from .conftest import Sec


@pytest.fixture()
def secret_file() -> Iterator[tuple[Path, str]]:
    """A root-only file outside every cluster (what an attacker wants to read)."""
    text = f"ROOT-ONLY-{secrets.token_hex(8)}"
    path = Path(f"/var/tmp/cht-secret-{secrets.token_hex(4)}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    try:
        yield path, text
    finally:
        path.unlink(missing_ok=True)


def test_logs_and_status_do_not_follow_links_a_job_planted(
        sec: Sec, secret_file: tuple[Path, str]) -> None:
    path, text = secret_file
    key = sec.cluster.dir.blob_account
    script = f"""#!/bin/bash
echo hello
rm -f slurm-$SLURM_JOB_ID.out; ln -s {path} slurm-$SLURM_JOB_ID.out
for d in .cloudhpc /shared/.cloudhpc/jobs/*; do
  mkdir -p $d 2>/dev/null; rm -f $d/status.json 2>/dev/null; ln -s {key} $d/status.json
done
true
"""
    job_id = sec.submit("cht-mal", script)
    sec.wait("cht-mal", job_id)
    logs = sec.get("cht-mal", f"/api/jobs/{job_id}/logs")
    assert text not in logs.text
    account_key = __import__("json").loads(key.read_text())["key"]
    shown = sec.get("cht-mal", f"/api/jobs/{job_id}")
    assert account_key not in shown.text
    as_admin = sec.get("cht-adm", f"/api/jobs/{job_id}/logs")
    assert text not in as_admin.text
    # the CLI's path, as root on this machine
    try:
        out = sec.cluster.logs(job_id)
    except Exception as exc:  # noqa: BLE001 - refusing is fine, leaking is not
        out = str(exc)
    assert text not in out


def _mal_box(sec: Sec) -> str:
    res = sec.post("cht-mal", "/api/storage/containers", json={"name": "mal-box"})
    assert res.status_code in (201, 200), res.text
    return "mal-box"


def test_stage_out_does_not_follow_a_link_out_of_the_job(sec: Sec) -> None:
    box = _mal_box(sec)
    script = "#!/bin/bash\nln -s /etc/passwd out.txt\n"
    job_id = sec.submit("cht-mal", script, stage_out=[f"out.txt:blob://{box}/passwd.txt"])
    job = sec.wait("cht-mal", job_id)
    assert not sec.cluster.storage.exists(parse_blob_url(f"blob://{box}/passwd.txt"))
    assert job["state"] == "failed"


def test_a_job_cannot_rewrite_its_staging_request(sec: Sec) -> None:
    box = _mal_box(sec)
    evil = ('{"in":[],"out":[{"source":"/etc/passwd","dest":"blob://' + box
            + '/stolen"}],"exe":[]}')
    script = f"""#!/bin/bash
echo ok > ok.txt
for f in .cloudhpc/staging.json $(find /shared -name staging.json 2>/dev/null); do
  echo '{evil}' > $f 2>/dev/null
done
true
"""
    job_id = sec.submit("cht-mal", script, stage_out=[f"ok.txt:blob://{box}/ok.txt"])
    sec.wait("cht-mal", job_id)
    assert sec.cluster.storage.exists(parse_blob_url(f"blob://{box}/ok.txt"))
    assert not sec.cluster.storage.exists(parse_blob_url(f"blob://{box}/stolen"))


def test_stage_in_cannot_write_cloudhpc_metadata(sec: Sec) -> None:
    box = _mal_box(sec)
    sec.cluster.storage.put(Path("/etc/hostname"), parse_blob_url(f"blob://{box}/x"))
    for dest in (".cloudhpc/staging.json", ".cloudhpc/env", "./.cloudhpc/x", "../x"):
        res = sec.post("cht-mal", "/api/jobs", json={
            "script": "#!/bin/sh\ntrue\n", "stage_in": [f"blob://{box}/x:{dest}"]})
        assert res.status_code == 400, (dest, res.text)


def test_job_directories_and_homes_are_private(sec: Sec) -> None:
    marker = f"VICTIM-{secrets.token_hex(6)}"
    vic = sec.submit("cht-vic", f"#!/bin/bash\necho {marker}\necho {marker} > data.txt\n"
                     f"echo {marker} > $HOME/notes.txt\n")
    sec.wait("cht-vic", vic)
    workdir = sec.get("cht-vic", f"/api/jobs/{vic}").json()["workdir"]
    host = sec.cluster.dir.host_path(workdir)
    assert host is not None
    st = host.stat()
    assert st.st_mode & 0o777 == 0o700
    assert st.st_uid == __import__("pwd").getpwnam("cht-vic").pw_uid
    spy = sec.submit("cht-mal", "#!/bin/bash\ncat /shared/jobs/*/* /shared/jobs/*/*/* "
                     "/home/*/* 2>&1; ls -la /shared/jobs/* /home/* 2>&1; true\n")
    sec.wait("cht-mal", spy)
    out = sec.get("cht-mal", f"/api/jobs/{spy}/logs").json()["output"]
    assert marker not in out


def test_every_user_has_a_private_home_on_every_node(sec: Sec) -> None:
    script = ("#!/bin/bash\nsrun -N2 --ntasks-per-node=1 bash -c "
              "'echo $(hostname) $HOME $(stat -c %U:%a $HOME)'\n"
              "echo shared > $HOME/x; srun -N2 --ntasks-per-node=1 cat $HOME/x\n")
    job_id = sec.submit("cht-mal", script, nodes=2)
    job = sec.wait("cht-mal", job_id)
    out = sec.get("cht-mal", f"/api/jobs/{job_id}/logs").json()["output"]
    assert job["state"] == "completed", out
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("hpc-")]
    assert sorted(ln[0] for ln in lines) == ["hpc-1", "hpc-2"], out
    assert all(ln[1:] == ["/home/cht-mal", "cht-mal:700"] for ln in lines), out
    assert out.count("shared") == 2, out
