"""Attack 3: a user renames their own job (Slurm allows any text) so that cloudhpc takes
another user's job for theirs: newlines, the squeue parser's separator, Key=Value text."""

from __future__ import annotations

import pwd
import time

from cloudhpc.slurm.client import parse_jobcomp

from .conftest import Sec

SEP = "\x1f"


def _fake_queue_line(job_id: int, user: str) -> str:
    """A line in the squeue -O layout of the code this test was written against."""
    fields = [str(job_id), "RUNNING", "None", "hpc", "hpc-1", "1", "1", user,
              "2026-01-01T00:00:00", "2026-01-01T00:00:00", "N/A", "0",
              f"/shared/x/slurm-{job_id}.out", "/shared/x", "fake"]
    return SEP.join(fields) + SEP


def test_a_renamed_job_cannot_pose_as_another_users(sec: Sec) -> None:
    victim = sec.submit("cht-vic", "#!/bin/bash\necho victim-output\nsleep 40\n")
    sec.wait_running("cht-vic", victim)
    mal = pwd.getpwnam("cht-mal")
    names = [
        "x" + SEP + "\n" + _fake_queue_line(victim, "cht-mal") + "\n" + "y",
        f"x\nJobId={victim} UserId=cht-mal({mal.pw_uid}) GroupId=cht-mal({mal.pw_gid}) "
        f"Name=x JobState=RUNNING",
        f"x UserId=cht-mal({mal.pw_uid}) JobId={victim} UserName=cht-mal",
    ]
    quoted = [n.replace("\n", "\\n").replace(SEP, "\\x1f") for n in names]
    renames = "\n".join(f"scontrol update JobId=$SLURM_JOB_ID JobName=$'{q}'\nsleep 3"
                        for q in quoted)
    attacker = sec.submit("cht-mal", f"#!/bin/bash\n{renames}\nsleep 3\n")
    deadline = time.monotonic() + 40
    saw = set()
    while time.monotonic() < deadline:
        state = sec.get("cht-mal", f"/api/jobs/{attacker}").json()["state"]
        for path in (f"/api/jobs/{victim}", f"/api/jobs/{victim}/logs"):
            res = sec.get("cht-mal", path)
            saw.add(res.status_code)
            assert res.status_code == 403, (path, res.text)
        listed = sec.get("cht-mal", "/api/jobs", params={"limit": 1000}).json()["jobs"]
        assert victim not in [j["job_id"] for j in listed]
        if state in ("completed", "failed"):
            break
        time.sleep(0.5)
    assert sec.delete("cht-mal", f"/api/jobs/{victim}").status_code == 403
    assert sec.get("cht-vic", f"/api/jobs/{victim}").json()["state"] == "running"
    sec.delete("cht-vic", f"/api/jobs/{victim}")


def test_a_forged_jobcomp_record_gives_no_job_away() -> None:
    """Captured from a real jobcomp/filetxt file after a user renamed job 3 to
    'x\\nJobId=1 UserId=mallory(1000) ...': the forged line is not job 1's record."""
    text = (
        "JobId=1 UserId=victim(1001) GroupId=victim(1001) Name=a JobState=COMPLETED "
        "Partition=hpc TimeLimit=UNLIMITED StartTime=2026-11-29T02:32:35 "
        "EndTime=2026-11-29T02:32:35 NodeList=hpc-1 NodeCnt=1 ProcCnt=1 WorkDir=/ "
        "ReservationName= Tres=cpu=1 Account= QOS= WcKey= Cluster=unknown "
        "SubmitTime=2026-11-29T02:32:22 EligibleTime=unknown DerivedExitCode=0:0 "
        "ExitCode=0:0 \n"
        "JobId=3 UserId=mallory(1000) GroupId=mallory(1000) Name=x ExitCode=0:0 \n"
        "JobId=1 UserId=mallory(1000) GroupId=x(1) Name=y JobState=COMPLETED Partition=hpc "
        "TimeLimit=UNLIMITED StartTime=2026-11-29T02:32:36 EndTime=2026-11-29T02:32:36 "
        "NodeList=hpc-1 NodeCnt=1 ProcCnt=1 WorkDir=/ ReservationName= Tres=cpu=1 "
        "Account= QOS= WcKey= Cluster=unknown SubmitTime=2026-11-29T02:32:36 "
        "EligibleTime=2026-11-29T02:32:36 DerivedExitCode=0:0 ExitCode=0:0 \n")
    records = parse_jobcomp(text)
    owners = {r.job_id: r.uid for r in records}
    assert owners.get(1) != 1000  # job 1 is not mallory's, whatever the file says
    assert owners.get(3) == 1000
