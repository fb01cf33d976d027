"""blob://CONTAINER/PATH addresses and staging specifications (pure; no I/O)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from cloudhpc.errors import CloudHPCError

SCHEME = "blob://"
# Azure's container naming rules: 3-63 chars, lowercase letters, digits and single hyphens
CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")


class StagingError(CloudHPCError):
    """A blob address or staging specification that cannot be used."""


@dataclass(frozen=True)
class BlobURL:
    container: str
    path: str  # "" for the whole container; no leading or trailing "/"

    def __str__(self) -> str:
        return f"{SCHEME}{self.container}/{self.path}" if self.path else \
            f"{SCHEME}{self.container}"

    def child(self, name: str) -> BlobURL:
        return BlobURL(self.container, f"{self.path}/{name}" if self.path else name)


def parse_blob_url(text: str, *, what: str = "blob address") -> BlobURL:
    hint = "write it as blob://CONTAINER/PATH, e.g. blob://data/inputs/a.csv"
    if not text.startswith(SCHEME):
        raise StagingError(f"{what} '{text}' does not start with {SCHEME}", hint=hint)
    rest = text[len(SCHEME):]
    container, _, path = rest.partition("/")
    if not CONTAINER.match(container):
        raise StagingError(
            f"{what} '{text}': '{container}' is not a valid container name",
            hint="container names are 3-63 lowercase letters, digits and single hyphens")
    path = path.strip("/")
    if "//" in path or any(part in (".", "..") for part in path.split("/") if path):
        raise StagingError(f"{what} '{text}': the path may not hold '//', '.' or '..'",
                           hint=hint)
    return BlobURL(container, path)


def job_relative(path: str, *, what: str) -> str:
    """A path inside the job's directory, normalised; anything that leaves it is refused."""
    if not path or path.startswith("/"):
        raise StagingError(f"{what} '{path}' must be a path relative to the job's directory",
                           hint="e.g. inputs/data.csv (the job starts in its own directory)")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise StagingError(f"{what} '{path}' is outside the job's directory",
                           hint="use a path below the job's directory, without '..'")
    if norm.split("/")[0] == ".cloudhpc":
        raise StagingError(f"{what} '{path}' is in .cloudhpc/, where cloudhpc keeps the "
                           "job's staging status", hint="pick another path")
    return norm


def local_relative(name: str, *, what: str = "blob") -> str:
    """A blob's name (or the part below a folder) as a relative local path: every component
    a plain file name. Names with '..', '.', empty parts, backslashes or components longer
    than a file name may be are refused: they would land outside the target."""
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", "..") or "\\" in part or "\0" in part:
            raise StagingError(f"{what} name '{name}' cannot be a local path (it holds "
                               f"'{part or '//'}')", hint="rename the blob, or fetch "
                               "another one")
        if len(part.encode()) > 255:
            raise StagingError(f"{what} name '{name[:60]}...' has a part of "
                               f"{len(part.encode())} bytes; file names hold at most 255",
                               hint="rename the blob")
    return "/".join(parts)


@dataclass(frozen=True)
class StageIn:
    source: BlobURL
    dest: str  # relative to the job directory; "." keeps the blob's name

    def to_dict(self) -> dict[str, str]:
        return {"source": str(self.source), "dest": self.dest}

    def __str__(self) -> str:  # the form parse_stage_in reads
        return f"{self.source}:{self.dest}"


@dataclass(frozen=True)
class StageOut:
    source: str  # relative to the job directory (a file or a directory)
    dest: BlobURL

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "dest": str(self.dest)}

    def __str__(self) -> str:  # the form parse_stage_out reads
        return f"{self.source}:{self.dest}"


def parse_stage_in(spec: str) -> StageIn:
    """'blob://CONTAINER/PATH:DEST' (DEST optional: the blob's own name in the job dir)."""
    if not spec.startswith(SCHEME):
        raise StagingError(f"--stage-in '{spec}' must start with {SCHEME}",
                           hint="write it as blob://CONTAINER/PATH:DEST")
    body = spec[len(SCHEME):]
    url_text, sep, dest = body.rpartition(":")
    if not sep:
        url_text, dest = body, ""
    source = parse_blob_url(SCHEME + url_text, what="--stage-in source")
    if not source.path:
        raise StagingError(f"--stage-in '{spec}' names a whole container",
                           hint="name a blob or a folder: blob://CONTAINER/PATH:DEST")
    dest = dest or posixpath.basename(source.path)
    return StageIn(source, job_relative(dest, what="--stage-in destination"))


def parse_stage_out(spec: str) -> StageOut:
    """'SRC:blob://CONTAINER/PATH' where SRC is relative to the job's directory."""
    src, sep, url = spec.partition(":" + SCHEME)
    if not sep:
        raise StagingError(f"--stage-out '{spec}' has no blob:// destination",
                           hint="write it as SRC:blob://CONTAINER/PATH, e.g. "
                           "out.txt:blob://results/run1/out.txt")
    dest = parse_blob_url(SCHEME + url, what="--stage-out destination")
    if not dest.path:
        raise StagingError(f"--stage-out '{spec}' names a whole container",
                           hint="add a path: SRC:blob://CONTAINER/PATH")
    return StageOut(job_relative(src, what="--stage-out source"), dest)
