"""The provider interface (after Ray's autoscaler v2 and Parsl's providers): small, batch,
idempotent by node name, failures reported as data.

`Provider` is what the control plane and the reconciler need: launch, terminate, list.
`Backend` adds what bringing a whole cluster up and down needs (its network, its control
plane, entering a node, what is left after `down`). The local backend implements both; the
Azure provider implements `Provider` on the head VM (the deployment itself is an ARM
template). Callers are typed against these protocols and get an implementation from
`cloudhpc.providers.backend_for` / `provider_for`."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cloudhpc.plan import NodeSpec, Role


class NodeState(enum.Enum):
    STARTING = "starting"   # created, bootstrap not finished
    RUNNING = "running"     # bootstrap done and its daemons alive
    DOWN = "down"           # exists, but its processes are gone or a daemon is dead
    ABSENT = "absent"       # the provider has no such node


@dataclass(frozen=True)
class NodeInfo:
    name: str
    role: Role
    nodeset: str
    state: NodeState
    address: str
    provider_id: str
    detail: str = ""
    created_at: float | None = None  # when the provider made it (epoch seconds)


@dataclass(frozen=True)
class ProviderError:
    """A launch the provider refused or that failed: capacity, quota, a boot that never
    finished. Data, not an exception: the rest of the batch goes on."""

    nodeset: str
    nodes: list[str]
    cause: str


class Provider(Protocol):
    def launch(self, nodes: Sequence[NodeSpec]) -> list[ProviderError]:
        """Create and boot NODES (a node already running is left alone); the failures."""
        ...

    def terminate(self, names: Sequence[str]) -> None:
        """Remove nodes; a node that does not exist is no error."""
        ...

    def rejoin(self, names: Sequence[str]) -> list[str]:
        """Make the slurmd of each running node register with slurmctld again, because
        slurmctld did not take its first registration; the nodes it was done for."""
        ...

    def nodes(self) -> dict[str, NodeInfo]:
        """Every node of the plan the provider manages, ABSENT ones included."""
        ...

    def errors(self) -> list[ProviderError]:
        """Every failure since this object was made."""
        ...

    def on_failure(self, report: Callable[[ProviderError], None]) -> None:
        """Where a failure goes that arrives after launch() returned (a cloud creates VMs
        for minutes); a provider whose launches end inside launch() never calls REPORT."""
        ...


class Backend(Provider, Protocol):
    """A whole cluster's infrastructure, for `up`, `down`, status and fault injection."""

    def create_network(self) -> None: ...

    def delete_network(self) -> None: ...

    def start_control_plane(self) -> None:
        """Start the service through which the head asks for nodes (idempotent); it may
        still be starting when this returns (nodes boot meanwhile)."""
        ...

    def wait_control_plane(self, timeout: float = 15.0) -> None:
        """Return once the control plane serves; ProvisionError if it does not in time."""
        ...

    def stop_control_plane(self) -> None: ...

    def control_plane_running(self) -> bool: ...

    def enter(self, node: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs ARGV on NODE (raises NodeNotFound if it is not up)."""
        ...

    def kill(self, node: str, daemon: str | None) -> list[int]:
        """Fault injection: SIGKILL one supervised DAEMON of NODE ("control-plane" names the
        control plane), or every process of NODE (None), as a VM losing power. Returns the
        pids killed ([] if nothing ran)."""
        ...

    def sweep(self) -> list[str]:
        """Remove what the cluster left that no record tracks (a process started but never
        recorded); returns what was removed."""
        ...

    def leftovers(self) -> list[str]:
        """What of the cluster still exists (checked after `down`)."""
        ...
