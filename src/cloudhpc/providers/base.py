"""The provider interface (after Ray's autoscaler v2): small, batch, idempotent by node name,
failures reported as data."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from cloudhpc.plan import NodeSpec, Plan, Role


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


@dataclass(frozen=True)
class ProviderError:
    nodeset: str
    nodes: list[str]
    cause: str


class Provider(Protocol):
    def create_network(self, plan: Plan) -> None: ...
    def delete_network(self, plan: Plan) -> None: ...
    def launch(self, nodes: list[NodeSpec]) -> None: ...
    def terminate(self, names: list[str]) -> None: ...
    def nodes(self) -> dict[str, NodeInfo]: ...
    def errors(self) -> list[ProviderError]: ...
