"""Unix users for jobs submitted through the API: a job runs as its token's user, created on
the cluster when missing. Local nodes share this machine's /etc/passwd, so a user made here
exists on every node; on Azure each VM has its own, and Slurm's Prolog makes the job's user
on each of its nodes with the same uid and gid (slurm/conf.py, USER_PROLOG)."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from cloudhpc.api.tokens import USER_RE
from cloudhpc.errors import CloudHPCError


def ensure_user(name: str) -> pwd.struct_passwd:
    if not USER_RE.match(name):
        raise CloudHPCError(f"{name!r} is not a valid Unix user name")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/bash",
                             "--user-group", "--comment", "cloudhpc API user", name],
                            capture_output=True, text=True)
    if result.returncode not in (0, 9):  # 9: made meanwhile by another request
        raise CloudHPCError(f"cannot create user {name}: {result.stderr.strip()}")
    return pwd.getpwnam(name)


def give(path: Path, user: pwd.struct_passwd) -> None:
    """Hand a job directory (and what is in it) to the job's user."""
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)
