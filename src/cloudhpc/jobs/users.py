"""Unix users for jobs submitted through the API: a job runs as its token's user, created on
the cluster when missing, with a private home (/home/USER inside every node: the cluster's
home directory is bound there, as NFS homes are on real clusters). Local nodes share this
machine's /etc/passwd, so a user made here exists on every node; on Azure each VM has its
own, and Slurm's Prolog makes the job's user on each of its nodes with the same uid and gid
(slurm/conf.py, USER_PROLOG).

Tokens never run jobs as root or as a system account: uid below 1000 or a login shell that
refuses logins (nologin, false) is refused, checked when a token is made and again at each
submission (an account may change in between)."""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path

from cloudhpc.errors import CloudHPCError
from cloudhpc.runner import Runner

NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
FIRST_UID = 1000  # Debian's FIRST_UID: below it, system accounts
NO_LOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")
HOME = "/home"


class UserError(CloudHPCError):
    """A name that cannot be an API user's."""


def check_name(name: str) -> None:
    """A full match: 'alice\\n' or 'alice\\nroot' are not names."""
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise UserError(f"{name!r} is not a valid Unix user name",
                        hint="use lowercase letters, digits, '-' or '_' (at most 32), "
                        "starting with a letter or '_'")


def check_ordinary(name: str) -> pwd.struct_passwd | None:
    """Refuse root and system accounts; None when the user does not exist yet (it will be
    made with a uid of 1000 or more)."""
    check_name(name)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if entry.pw_uid < FIRST_UID or entry.pw_uid == 65534 or entry.pw_shell in NO_LOGIN:
        raise UserError(f"'{name}' is a system account (uid {entry.pw_uid}, shell "
                        f"{entry.pw_shell}): API tokens run jobs as ordinary users only",
                        hint="name an ordinary user (uid >= 1000); admin tokens too act as "
                        "an ordinary user, with the right to see every job")
    return entry


def ensure_user(name: str, homes: Path | None = None,
                runner: Runner | None = None) -> pwd.struct_passwd:
    """The user's passwd entry (made if missing) and its home under HOMES (this machine's
    path of the cluster's /home), mode 0700."""
    entry = check_ordinary(name)
    if entry is None:
        result = (runner or Runner()).run(
            ["useradd", "--no-create-home", "--home-dir", f"{HOME}/{name}", "--shell",
             "/bin/bash", "--user-group", "--comment", "cloudhpc API user", name],
            check=False)
        if result.returncode not in (0, 9):  # 9: made meanwhile by another request
            raise UserError(f"cannot create user {name}: {result.stderr.strip()}")
        entry = check_ordinary(name)
        assert entry is not None
    if homes is not None:
        make_home(homes, entry)
    return entry


def make_home(homes: Path, entry: pwd.struct_passwd) -> Path:
    path = homes / entry.pw_name
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.lstat(path)
        if st.st_uid != entry.pw_uid or not os.path.isdir(path) or os.path.islink(path):
            raise UserError(f"home {path} is not {entry.pw_name}'s",
                            hint="remove it; cloudhpc makes it again") from None
        return path
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path
