"""The staging agreement between the submit side (cloudhpc.jobs.staging writes the spec into
cloudhpc's record of the job) and the job side (cloudhpc.storage.stage reads it and writes
the status into the job's directory, which `cloudhpc job ID` shows). Standard library only:
the job side starts inside every staged job."""

from __future__ import annotations

from typing import NotRequired, TypedDict


class StageInItem(TypedDict):
    source: str         # blob://CONTAINER/PATH
    dest: str           # relative to the job's directory
    blobs: list[str]    # the blobs under SOURCE at submission


class StageOutItem(TypedDict):
    source: str         # relative to the job's directory
    dest: str           # blob://CONTAINER/PATH


class Program(TypedDict):
    url: str
    sha256: str         # computed by cloudhpc when it fetched the program
    path: str           # in the program cache, as nodes see it
    cached: bool


# META/staging.json: root's, readable by the job's group ("in" is a keyword: functional form)
StagingSpec = TypedDict("StagingSpec", {"in": list[StageInItem], "out": list[StageOutItem],
                                        "exe": list[Program]})


class Transfer(TypedDict):
    source: str
    dest: str
    ok: bool
    files: NotRequired[int]
    bytes: NotRequired[int]
    seconds: NotRequired[float]
    cached: NotRequired[bool]
    error: NotRequired[str]


class PhaseStatus(TypedDict):
    state: str          # running, done, failed
    transfers: list[Transfer]
    started: NotRequired[float]
    ended: NotRequired[float]
    error: NotRequired[str]


# JOBDIR/.cloudhpc/status.json: the job's own file (untrusted when read back)
StagingStatus = TypedDict("StagingStatus", {"in": PhaseStatus, "out": PhaseStatus},
                          total=False)
