"""Job identity across crashes, the pure parts: the highest job id a cluster has seen (from
slurmctld's own log lines, never a job's name), FirstJobId in slurm.conf, submission ids in
Slurm's comments (matched with the uid), the submissions store and its idempotency keys,
and the wrapper that runs a job once."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import pytest

from cloudhpc.jobs import wrapper
from cloudhpc.jobs.submissions import KEY_LIFETIME, KeyInUse, Submissions
from cloudhpc.slurm import jobids
from cloudhpc.slurm.client import parse_comments


def test_highest_id_comes_from_slurmctlds_own_lines(tmp_path: Path) -> None:
    root = tmp_path / "clusters" / "c"
    (root / "logs").mkdir(parents=True)
    (root / "slurm").mkdir()
    (root / "logs" / "slurmctld.log").write_text(
        "[2026-11-29T04:44:27.889] _slurm_rpc_submit_batch_job: JobId=17 InitPrio=1 usec=2\n"
        "[2026-11-29T04:44:28.019] sched: Allocate JobId=99999 NodeList=hpc-1 #CPUs=1\n"
        "[2026-11-29T04:44:29.000] sched: _slurm_rpc_allocate_resources JobId=21 "
        "NodeList=hpc-1 usec=5\n"
        # a job name cannot forge a line start: these do not count
        "[x] _job_complete: JobId=5 name=_slurm_rpc_submit_batch_job: JobId=88888 \n")
    # a job name with a newline forges jobcomp lines: that file does not count
    (root / "slurm" / "jobcomp.txt").write_text("JobId=19 UserId=a(1) GroupId=a(1) Name=x\n"
                                                "JobId=67000000 UserId=forged\n")
    assert jobids.highest_seen(root) == 21


def test_first_job_id_is_set_or_replaced(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=c\nMinJobAge=300\n")
    jobids.set_first_job_id(conf, 42)
    assert conf.read_text() == "ClusterName=c\nMinJobAge=300\nFirstJobId=42\n"
    jobids.set_first_job_id(conf, 43)
    assert conf.read_text().count("FirstJobId=") == 1 and "FirstJobId=43\n" in conf.read_text()


def test_comments_name_submissions_with_their_uid() -> None:
    def rec(job: int, uid: int, comment: str) -> bytes:
        return f"{job}\x1f{uid}\x1f".encode() + comment.encode().ljust(64)[:64] + b"\n"

    data = (rec(5, 1001, "cloudhpc:20261129-044100-abcdef")
            + rec(6, 1002, "cloudhpc-stage:20261129-044100-abcdef")  # same id, other user
            + rec(7, 0, "nothing of ours") + rec(8, 0, "cloudhpc:../../etc"))
    assert parse_comments(data) == {"20261129-044100-abcdef": [(5, 1001), (6, 1002)]}


def test_submissions_record_keys_and_replays(tmp_path: Path) -> None:
    subs = Submissions(tmp_path / "state.db", "c")
    subs.record("s1", 1001, "tok", "k1", ["--x", "a.sh"])
    with pytest.raises(KeyInUse) as info:
        subs.record("s2", 1001, "tok", "k1", ["--x", "b.sh"])
    assert info.value.existing.sub == "s1" and info.value.existing.job_id is None
    subs.record("s3", 1002, "other", "k1", ["c.sh"])  # keys belong to a token
    subs.record("s4", 1001, "tok", None, ["d.sh"])  # no key: never a conflict
    subs.record("s5", 1001, "tok", None, ["e.sh"])
    subs.accepted("s1", 11)
    found = subs.by_key("tok", "k1")
    assert found is not None and found.job_id == 11 and found.argv == ["--x", "a.sh"]
    subs.resubmitted("s1", 12)
    assert subs.by_job(11) is not None and subs.by_job(11).resubmitted_as == 12  # type: ignore[union-attr]
    subs.forget("s1")
    assert subs.by_key("tok", "k1") is None
    subs.record("s6", 1001, "tok", "k1", ["f.sh"])  # a forgotten key may be used again


def test_an_expired_key_may_be_used_again(tmp_path: Path) -> None:
    subs = Submissions(tmp_path / "state.db", "c")
    subs.record("s1", 1001, "tok", "k", ["a.sh"])
    with subs._db() as db:
        db.execute("UPDATE submissions SET created=?", (time.time() - KEY_LIFETIME - 1,))
    assert subs.by_key("tok", "k") is None
    subs.record("s2", 1001, "tok", "k", ["b.sh"])


def _run_wrapper(tmp_path: Path, job_id: str, script: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "job.sh").write_text(script)
    (tmp_path / "job.sh").chmod(0o755)
    text = wrapper.render("job.sh", script, str(tmp_path), None)
    (tmp_path / "w.sh").write_text(text)
    return subprocess.run(["sh", str(tmp_path / "w.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": job_id}, timeout=60)


def test_wrapper_runs_a_job_once_and_keeps_directives(tmp_path: Path) -> None:
    script = "#!/bin/bash\n#SBATCH --mem=1G\necho run >> count\nexit 3\n"
    assert "#SBATCH --mem=1G" in wrapper.render("job.sh", script, "/w", None).splitlines()[1]
    first = _run_wrapper(tmp_path, "7", script)
    assert first.returncode == 3
    again = _run_wrapper(tmp_path, "7", script)  # a second launch of job 7 after a crash
    assert again.returncode == 3 and "already ran" in again.stderr
    assert (tmp_path / "count").read_text() == "run\n"
    # the same submission under a new id (resubmitted after slurmctld forgot it, while its
    # first run went on): not run again either
    other = _run_wrapper(tmp_path, "8", script)
    assert other.returncode == 3 and (tmp_path / "count").read_text() == "run\n"


def test_wrapper_runs_again_when_the_first_run_died(tmp_path: Path) -> None:
    """A first run that died (its node lost) holds no lock and left no exit code."""
    runs = tmp_path / ".cloudhpc"
    runs.mkdir(parents=True)
    (runs / "run.lock").touch()
    result = _run_wrapper(tmp_path, "9", "#!/bin/bash\necho ran > out\n")
    assert result.returncode == 0 and (tmp_path / "out").read_text() == "ran\n"
    # its marks: the script's exit code, then the job's, appended to the lock file
    assert (runs / "run.lock").read_text() == "script 0\nrc 0\n"
    assert sorted(p.name for p in runs.iterdir()) == ["run.lock"]


def _start_first_run(tmp_path: Path, script: str,
                     env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A wrapper run in a session of its own, once its script has started (made 'count')."""
    (tmp_path / "job.sh").write_text(script)
    (tmp_path / "job.sh").chmod(0o755)
    (tmp_path / "w.sh").write_text(wrapper.render("job.sh", script, str(tmp_path), None))
    first = subprocess.Popen(["sh", str(tmp_path / "w.sh")], env=env,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while not (tmp_path / "count").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return first


def test_a_starved_first_run_is_alive_not_stale(tmp_path: Path) -> None:
    """A first run starved of CPU for 10 s (the soak's load; here: stopped) is still alive:
    a second launch waits for its end and does not run the script again. With the old
    heartbeat (stale after 8 s) the second launch ran it a second time."""
    import os
    import signal

    script = "#!/bin/bash\necho start >> count\nsleep 2\necho end >> count\n"
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "10"}
    first = _start_first_run(tmp_path, script, env)
    os.killpg(first.pid, signal.SIGSTOP)  # every process of the first run
    try:
        time.sleep(10)
        second = subprocess.Popen(["sh", str(tmp_path / "w.sh")], env={**env,
                                  "SLURM_JOB_ID": "11"}, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert first.wait(timeout=30) == 0
    _, err = second.communicate(timeout=30)
    assert second.returncode == 0
    assert (tmp_path / "count").read_text() == "start\nend\n", err


def test_simultaneous_launches_of_one_submission_run_it_once(tmp_path: Path) -> None:
    """A forgotten job's first run and its resubmission may start at the same instant: the
    check and the claim are one step (flock). Without it, 4 launches ran it twice."""
    script = "#!/bin/bash\necho run >> count\nsleep 1\n"
    (tmp_path / "job.sh").write_text(script)
    (tmp_path / "job.sh").chmod(0o755)
    (tmp_path / "w.sh").write_text(wrapper.render("job.sh", script, str(tmp_path), None))
    runs = [subprocess.Popen(["sh", str(tmp_path / "w.sh")], stderr=subprocess.DEVNULL,
                             env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": str(i)})
            for i in range(4)]
    assert [p.wait(timeout=60) for p in runs] == [0, 0, 0, 0]
    assert (tmp_path / "count").read_text() == "run\n"


def test_a_run_slurm_kills_leaves_no_exit_code_and_runs_again(tmp_path: Path) -> None:
    """Slurm ends a requeued job's run (its node declared lost) by signalling every process
    of the job, one by one, deepest first (proctrack/linuxproc): under load the script can
    be dead a moment before the wrapper gets its signal. Seen in the soak: the wrapper took
    the killed script's 143 for the script's end, marked it, and the requeued job then
    ended at once with 143 ("already ran to its end") instead of running again."""
    import os
    import signal

    script = "#!/bin/bash\necho start >> count\nsleep 30\necho end >> count\n"
    first = _start_first_run(tmp_path, script, {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "12"})
    time.sleep(0.2)
    children = subprocess.run(["pgrep", "-s", str(first.pid)], capture_output=True,
                              text=True).stdout.split()
    for pid in sorted((int(p) for p in children if int(p) != first.pid), reverse=True):
        os.kill(pid, signal.SIGTERM)  # the script and its sleep first ...
    time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):
        os.kill(first.pid, signal.SIGTERM)  # ... the wrapper a moment later
    first.wait(timeout=30)
    assert "script" not in (tmp_path / ".cloudhpc" / "run.lock").read_text()
    (tmp_path / "job.sh").write_text(script.replace("sleep 30", "true"))
    again = _run_wrapper(tmp_path, "12", script.replace("sleep 30", "true"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "count").read_text() == "start\nstart\nend\n"


def test_a_script_that_ends_by_a_signal_of_its_own_is_marked(tmp_path: Path) -> None:
    """A script killed by a signal nobody sent the wrapper (here: it kills itself) ended:
    its exit code is kept and a later launch does not run it again."""
    script = "#!/bin/bash\necho run >> count\nkill -TERM $$\n"
    first = _run_wrapper(tmp_path, "13", script)
    assert first.returncode == 143
    assert (tmp_path / ".cloudhpc" / "run.lock").read_text() == "script 143\nrc 143\n"
    again = _run_wrapper(tmp_path, "13", script)
    assert again.returncode == 143 and (tmp_path / "count").read_text() == "run\n"
