"""Attack 9: a job sees every process of the machine, other clusters' included."""

from __future__ import annotations

import os

from .conftest import Sec


def test_a_job_sees_only_its_own_nodes_processes(sec: Sec) -> None:
    job_id = sec.submit("cht-mal", "#!/bin/bash\nfor p in /proc/[0-9]*; do "
                        "echo \"PROC ${p#/proc/} $(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\"; "
                        "done\n")
    assert sec.wait("cht-mal", job_id)["state"] == "completed"
    out = sec.get("cht-mal", f"/api/jobs/{job_id}/logs").json()["output"]
    procs = [ln for ln in out.splitlines() if ln.startswith("PROC ")]
    assert procs, out
    seen = " ".join(procs)
    assert "slurmctld" not in seen  # the head's daemon, in another node
    assert "-m pytest" not in seen and "bin/pytest" not in seen  # this machine's own
    assert f"PROC {os.getpid()} " not in seen
