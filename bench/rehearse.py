"""The Azure rehearsal of examples/azure-hb.yaml, timed: the node image (built or from the
cache), `up --rehearse` until the head's API answers, the first job on the static node, an
MPI job on two RDMA nodes started from zero through the SDK, and `down`. Prints JSON.

    cd bench && ../.venv/bin/python rehearse.py"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NAME = "hbdemo"


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="cloudhpc-rehearse-"))
    env = {**os.environ, "CLOUDHPC_HOME": str(home)}
    template = yaml.safe_load((ROOT / "examples" / "azure-hb.yaml").read_text())
    template["network"]["cidr"] = "198.19.68.0/24"
    path = home / "azure-hb.yaml"
    path.write_text(yaml.safe_dump(template))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "cloudhpc.cli", *args], env=env,
                              capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise SystemExit(f"cloudhpc {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done

    from cloudhpc.rehearse.platform import VmPlatform

    def head_sh(script: str) -> str:
        root = home / "rehearsal"
        box = next(b for b in VmPlatform(root, root / "platform").running()
                   if b.spec.hostname == "head")
        return box.run("sh", "-c", script, timeout=120).stdout

    def wait_job(job: str) -> str:
        while True:
            state = head_sh(f"sacct -n -X -j {job} -o State").strip()
            if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
                return state
            time.sleep(1)

    result: dict[str, object] = {"template": "examples/azure-hb.yaml"}
    t0 = time.monotonic()
    image = json.loads(cli("image", "build", "--json").stdout)
    result["image_s"] = round(time.monotonic() - t0, 1)
    result["image_wheel_sha256"] = image["wheel_sha256"]
    t0 = time.monotonic()
    try:
        up = json.loads(cli("up", str(path), "--rehearse", "--json").stdout)
        result["up_to_head_ready_s"] = round(time.monotonic() - t0, 1)
        result["head_ready_after_deployment_s"] = up["outputs"]["headReadySeconds"]
        while head_sh("sinfo -h -n serial-1 -o %T").strip() != "idle":
            time.sleep(1)
        result["up_to_static_node_idle_s"] = round(time.monotonic() - t0, 1)
        job = head_sh("cd /tmp && sbatch --parsable -p serial -N1 --wrap hostname").strip()
        result["first_job_state"] = wait_job(job)
        result["up_to_first_job_done_s"] = round(time.monotonic() - t0, 1)
        script = (ROOT / "examples" / "jobs" / "mpi_pi.sh").read_text()
        head_sh(f"mkdir -p /shared/b && cat > /shared/b/mpi_pi.sh <<'EOS'\n{script}\nEOS")
        t1 = time.monotonic()
        job = head_sh("cd /shared/b && sbatch --parsable -p hb -N 2 --ntasks-per-node 2 "
                      "mpi_pi.sh").strip()
        result["mpi_job_state"] = wait_job(job)
        result["mpi_job_from_zero_nodes_s"] = round(time.monotonic() - t1, 1)
        result["mpi_check_ok"] = "CHECK OK" in head_sh(f"cat /shared/b/slurm-{job}.out")
    finally:
        t1 = time.monotonic()
        cli("down", NAME)
        result["down_s"] = round(time.monotonic() - t1, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
