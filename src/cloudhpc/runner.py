"""The one seam through which every external command runs (ip, nsenter, Slurm, mount ...);
the node supervisor, which starts and watches daemons, is the only other."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudhpc.errors import CommandError, MissingPackageError

# program -> Debian package that ships it
PACKAGES = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sbatch": "slurm-client",
    "squeue": "slurm-client",
    "scontrol": "slurm-client",
    "sinfo": "slurm-client",
    "scancel": "slurm-client",
    "munged": "munge",
    "mungekey": "munge",
    "mpirun": "openmpi-bin",
    "mmdebstrap": "mmdebstrap",
}

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Result:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str


class Runner:
    """Runs commands; raises CommandError (command, exit code, stdout, stderr) on failure."""

    def run(
        self,
        cmd: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = 120,
    ) -> Result:
        argv = list(cmd)
        full_env = {"PATH": BASE_PATH, "LANG": "C.UTF-8"}
        if env:
            full_env.update(env)
        try:
            proc = subprocess.run(
                argv, input=input, capture_output=True, text=True, env=full_env, timeout=timeout,
                encoding="utf-8", errors="surrogateescape"
            )
        except FileNotFoundError:
            raise MissingPackageError(argv[0], PACKAGES.get(argv[0], argv[0])) from None
        except subprocess.TimeoutExpired as exc:
            raise CommandError(argv, -1, "", f"timed out after {exc.timeout} s") from None
        result = Result(argv, proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return result


    def spawn(self, cmd: Sequence[str], log: Path) -> None:
        """Start a detached program (it must daemonise itself, e.g. `setsid -f`): the
        command returns at once and its output goes to LOG."""
        argv = list(cmd)
        try:
            with open(log, "ab") as fh:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=fh,
                                      stderr=subprocess.STDOUT, timeout=60,
                                      env={"PATH": BASE_PATH, "LANG": "C.UTF-8"})
        except FileNotFoundError:
            raise MissingPackageError(argv[0], PACKAGES.get(argv[0], argv[0])) from None
        if proc.returncode != 0:
            raise CommandError(argv, proc.returncode, "", f"see {log}")


    def start(self, cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> int:
        """Start a long-running program in a session of its own, its output to LOG; returns
        its pid at once (the rehearsal's VMs and endpoint)."""
        argv = list(cmd)
        full_env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", **(env or {})}
        try:
            with open(log, "ab") as fh:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh,
                                        stderr=subprocess.STDOUT, env=full_env,
                                        start_new_session=True)
        except FileNotFoundError:
            raise MissingPackageError(argv[0], PACKAGES.get(argv[0], argv[0])) from None
        return proc.pid

    def replace(self, cmd: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        """Become CMD (exec): for interactive commands that take over the terminal
        (`cloudhpc exec`) and for the boot script handing over to the node supervisor."""
        argv = list(cmd)
        full_env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", **(env or {})}
        try:
            os.execvpe(argv[0], argv, full_env)
        except FileNotFoundError:
            raise MissingPackageError(argv[0], PACKAGES.get(argv[0], argv[0])) from None


def require_programs(names: Sequence[str]) -> None:
    """Fail with one line naming the first missing program and how to install it."""
    search = os.environ.get("PATH", "") + ":" + BASE_PATH
    for name in names:
        if shutil.which(name, path=search) is None:
            raise MissingPackageError(name, PACKAGES.get(name, name))
