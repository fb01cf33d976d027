"""The one way cloudhpc writes a file that holds a secret (keys, tokens, passwords, blob
credentials, the event log): created with its final mode (never briefly readable), never
through a link someone planted, optionally given to a group. Standard library only: the
power-save programs use it through the event log."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE = 0o600
READ_ONLY = 0o400
GROUP_READ = 0o640  # root's, readable by one group (a job's record)


def write_secret(path: Path | str, data: bytes | str, *, mode: int = PRIVATE,
                 exclusive: bool = False, gid: int | None = None) -> None:
    """Write DATA to PATH with MODE (0600 unless said). EXCLUSIVE: fail if PATH exists
    (FileExistsError), for files made once. Otherwise an existing file is replaced whole
    (a new file renamed over it), so a reader never sees half of it. GID: the file's group
    (its owner stays root)."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    target = path if exclusive else path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if not exclusive:
        target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        if gid is not None:
            os.fchown(fd, 0, gid)
        os.write(fd, raw)
    except BaseException:
        os.close(fd)
        target.unlink(missing_ok=True)
        raise
    os.close(fd)
    if not exclusive:
        os.replace(target, path)


def append_private(path: Path | str, line: bytes) -> None:
    """Append LINE in one write to a file only its owner reads (made 0600 if new)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, PRIVATE)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
