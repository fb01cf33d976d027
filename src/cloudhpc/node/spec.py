"""What a provider hands the node supervisor (JSON on disk): the node's name, its binds and
private /tmp, and the daemons to keep alive. Typed here for both sides: cloudhpc.node.bootstrap
writes it, cloudhpc.node.supervisor reads it. Standard library only."""

from __future__ import annotations

from typing import NotRequired, TypedDict

# the number of the listening socket a daemon with `listen` gets from its supervisor
LISTEN_FD_ENV = "CLOUDHPC_LISTEN_FD"


class DaemonSpec(TypedDict):
    name: str
    argv: list[str]
    wait_for: NotRequired[str]        # a path that exists once the daemon serves
    env: NotRequired[dict[str, str]]  # added to the node's environment
    # [address, port] the supervisor listens on for the daemon and hands it (LISTEN_FD_ENV)
    listen: NotRequired[list[str | int]]
    # not on `up`'s path: starts with the least CPU share, until it calls
    # cloudhpc.node.priority.serving()
    low_start: NotRequired[bool]


class SupervisorSpec(TypedDict):
    name: str
    dir: str                           # the node's run/ and logs/ are below it
    env: dict[str, str]
    daemons: list[DaemonSpec]
    role: NotRequired[str]
    hostname: NotRequired[str]         # absent for host-side services (the control plane)
    binds: NotRequired[list[list[str]]]  # [source, target] bind mounts
    tmpfs: NotRequired[list[str]]         # memory file systems of the node's own, mounted here
    tmp: NotRequired[str]              # the node's own /tmp
    keep_in_tmp: NotRequired[list[str]]
    pid_namespace: NotRequired[bool]   # the supervisor is the init of its PID namespace
