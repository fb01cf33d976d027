"""Template -> concrete plan: node names, addresses, partitions. Pure, no I/O."""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from dataclasses import dataclass, field

import hostlist

from cloudhpc import sizes
from cloudhpc.addressing import first_free, login_address, nodeset_share
from cloudhpc.template.schema import Accounting, Template


class Role(enum.Enum):
    HEAD = "head"
    STORAGE = "storage"
    COMPUTE = "compute"
    LOGIN = "login"


API_PORT = 8443  # the head's API (cloudhpc.api.server)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    role: Role
    address: str
    cpus: int
    nodeset: str = ""
    dynamic: bool = False
    size: str = ""
    memory_mib: int = 0  # what the node declares to Slurm (RealMemory)


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: list[str]
    default: bool

    @property
    def hostlist(self) -> str:
        return str(hostlist.collect_hostlist(self.nodes))


@dataclass(frozen=True)
class NodeSetPlan:
    name: str
    partition: str
    min: int
    max: int
    idle_timeout: int
    resume_timeout: int
    weight: int
    # an RDMA node set on Azure: a Uniform scale set with one placement group, whose
    # instances Azure names; Slurm learns each one's address when it registers
    uniform: bool = False

    @property
    def dynamic(self) -> bool:
        return self.max > self.min


@dataclass(frozen=True)
class Plan:
    cluster: str
    cidr: str
    gateway: str
    mtu: int
    nodes: list[NodeSpec]
    partitions: list[Partition]
    short_id: str = field(default="")
    nodesets: list[NodeSetPlan] = field(default_factory=list)
    blob: bool = True
    provider: str = "local"
    api_https: bool = True
    accounting: Accounting = field(default_factory=Accounting)

    @property
    def api_url(self) -> str:
        return f"{'https' if self.api_https else 'http'}://{self.head.address}:{API_PORT}"

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.cidr).prefixlen

    @property
    def bridge(self) -> str:
        return f"chb{self.short_id}"

    @property
    def head(self) -> NodeSpec:
        return next(n for n in self.nodes if n.role is Role.HEAD)

    @property
    def storage(self) -> NodeSpec:
        return next(n for n in self.nodes if n.role is Role.STORAGE)

    def node(self, name: str) -> NodeSpec | None:
        return next((n for n in self.nodes if n.name == name), None)

    def static_nodes(self) -> list[NodeSpec]:
        return [n for n in self.nodes if not n.dynamic]

    def compute(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.role is Role.COMPUTE]

    def login(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.role is Role.LOGIN]

    def nodeset(self, name: str) -> NodeSetPlan:
        return next(s for s in self.nodesets if s.name == name)

    @property
    def autoscaled(self) -> bool:
        return any(s.dynamic for s in self.nodesets)


def short_id(cluster: str) -> str:
    """Six hex digits naming the cluster's links (Linux allows 15 characters per name)."""
    return hashlib.sha1(cluster.encode()).hexdigest()[:6]


def local_cpus(size_name: str, cap: int) -> int:
    size = sizes.lookup(size_name)
    return min(size.vcpus if size else 1, cap)


def local_memory_mib(size_name: str, cap_gib: int) -> int:
    """The size's memory, capped like its CPUs (a local node shares this machine's)."""
    size = sizes.lookup(size_name)
    return min(size.memory_gib if size else 1, cap_gib) * 1024


AZURE_MEMORY_SHARE = 0.95  # of a size's memory declared to Slurm: the OS keeps the rest
# (CycleCloud's Slurm integration holds back 5% the same way, its dampen_memory default)


def node_cpus(t: Template, size_name: str) -> int:
    """CPUs a node declares: the size's on Azure; capped locally (local.cpu_cap)."""
    if t.provider == "azure":
        size = sizes.lookup(size_name)
        return size.vcpus if size else 1
    return local_cpus(size_name, t.local.cpu_cap)


def node_memory_mib(t: Template, size_name: str) -> int:
    """Memory a node declares (RealMemory): the size's on Azure, less what the OS keeps;
    capped locally (local.memory_cap_gib)."""
    if t.provider == "azure":
        size = sizes.lookup(size_name)
        return int((size.memory_gib if size else 1) * 1024 * AZURE_MEMORY_SHARE)
    return local_memory_mib(size_name, t.local.memory_cap_gib)


# How long Slurm waits for a node it asked for, and for one it let go. Locally a node is up
# in about a second and gone in less. On Azure a VM takes minutes to boot and install, and
# to delete: CycleCloud's Slurm integration uses ResumeTimeout=1800 and SuspendTimeout=600.
RESUME_TIMEOUT = {"local": 120, "azure": 1800}
SUSPEND_TIMEOUT = {"local": 3, "azure": 600}


def resume_timeout(t: Template) -> int:
    return RESUME_TIMEOUT.get(t.provider, 1800)


def head_address(t: Template) -> str:
    """The head's address, without planning every node."""
    return str(ipaddress.ip_network(t.network.cidr).network_address + first_free(t.provider))


def make_plan(t: Template) -> Plan:
    net = ipaddress.ip_network(t.network.cidr)
    first = net.network_address + 1
    gateway = str(first)
    head = ipaddress.ip_address(head_address(t))
    nodes = [
        NodeSpec("head", Role.HEAD, str(head), node_cpus(t, t.head.size), size=t.head.size),
        NodeSpec("storage", Role.STORAGE, str(head + 1), 1),
    ]
    share = nodeset_share(t.network.cidr, len(t.compute), t.provider)
    members: dict[str, list[str]] = {}
    sets = []
    for i, ns in enumerate(t.compute):
        names = [f"{ns.name}-{k}" for k in range(1, ns.max + 1)]
        base = head + 2 + i * share
        for k, name in enumerate(names):
            nodes.append(NodeSpec(name, Role.COMPUTE, str(base + k),
                                  node_cpus(t, ns.size), ns.name, dynamic=k >= ns.min,
                                  size=ns.size, memory_mib=node_memory_mib(t, ns.size)))
        partition = ns.partition or ns.name
        members.setdefault(partition, []).extend(names)
        sets.append(NodeSetPlan(ns.name, partition, ns.min, ns.max, ns.idle_timeout,
                                ns.resume_timeout or resume_timeout(t),
                                weight=10 * (i + 1),
                                uniform=ns.rdma and t.provider == "azure"))
    login = [(f"{ls.name}-{k}", ls.size) for ls in t.login for k in range(1, ls.count + 1)]
    for index, (name, size) in enumerate(login):
        nodes.append(NodeSpec(name, Role.LOGIN, login_address(t.network.cidr, index),
                              node_cpus(t, size), size=size))
    partitions = [Partition(name, names, default=k == 0)
                  for k, (name, names) in enumerate(members.items())]
    return Plan(t.name, str(net), gateway, t.network.mtu, nodes, partitions, short_id(t.name),
                sets, blob=t.storage.blob.enabled, provider=t.provider, api_https=t.api.https,
                accounting=t.accounting)
