"""The reconciler's node decisions: a pure function of snapshots (Slurm's view, the
provider's view, the plan) returning actions. Every rule says why it exists."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cloudhpc.slurm.client import SlurmNode

CAPACITY_PREFIX = "capacity:"
LOST_PREFIX = "node lost"
RESUME_FAILED_PREFIX = "resume failed"
ORPHAN_GRACE = 10.0  # a node this young may be one Slurm is just resuming
# a running node whose slurmd has not registered this long after the provider made it is
# told to register again (a local slurmd registers within a second; see decide())
REJOIN_AFTER = 10.0
# a cloud's refusals that mean "not now, not here": the node set backs off for the cooldown
# (https://learn.microsoft.com/troubleshoot/azure/virtual-machines/windows/
# allocation-failure, .../error-code-skunotavailable, quota errors)
CAPACITY_CODES = ("AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocation",
                  "SkuNotAvailable", "QuotaExceeded", "exceeding approved", "capacity")


def failure_reason(cause: str) -> str:
    """The Slurm reason of a node a provider could not make: a capacity or quota shortage
    backs its node set off for the cooldown, any other failure for a quarter of it (the
    reconciler makes the node eligible again after that: decide())."""
    if cause.startswith((CAPACITY_PREFIX, RESUME_FAILED_PREFIX, LOST_PREFIX)):
        return cause
    if any(code.lower() in cause.lower() for code in CAPACITY_CODES):
        return f"{CAPACITY_PREFIX} {cause}"
    return f"{RESUME_FAILED_PREFIX}: {cause}"


class Act(enum.Enum):
    REPLACE = "replace"            # static node lost: requeue its jobs, make it anew
    FAIL_DYNAMIC = "fail_dynamic"  # dynamic node lost: requeue its jobs, power it down
    REMOVE_ORPHAN = "remove_orphan"  # provider has a node Slurm thinks is powered down
    RETRY = "retry"                # cooldown over, or a lost node removed: eligible again
    REJOIN = "rejoin"              # running, but Slurm did not take its registration


@dataclass(frozen=True)
class ProviderNode:
    name: str
    state: str  # starting, running, down, absent (providers.base.NodeState values)
    detail: str = ""
    age: float = 0.0  # seconds since the provider created the node


@dataclass(frozen=True)
class Action:
    act: Act
    node: str
    why: str


def decide(slurm: dict[str, SlurmNode], provider: dict[str, ProviderNode],
           dynamic: dict[str, bool], cooldown: float) -> list[Action]:
    """`dynamic` maps every compute node of the plan to whether it is a CLOUD node."""
    actions = []
    for name, is_dynamic in sorted(dynamic.items()):
        s, p = slurm.get(name), provider.get(name)
        if s is None or p is None:
            continue
        powered_down = "POWERED_DOWN" in s.flags
        in_transition = bool({"POWERING_UP", "POWERING_DOWN"} & s.flags)
        if not is_dynamic and p.state in ("down", "absent"):
            # a static node must always exist: a VM that lost power is replaced
            actions.append(Action(Act.REPLACE, name, p.detail or f"provider: {p.state}"))
        elif (is_dynamic and p.state == "down" and not powered_down
              and not (s.state == "down" and s.reason.startswith(
                  (CAPACITY_PREFIX, RESUME_FAILED_PREFIX, LOST_PREFIX)))):
            # a dynamic node whose processes died: its jobs are requeued, Slurm powers it
            # down (our SuspendProgram removes it) and brings up a fresh one when needed
            actions.append(Action(Act.FAIL_DYNAMIC, name, p.detail or "processes gone"))
        elif (is_dynamic and "POWERING_UP" in s.flags and p.state == "running"
              and p.age >= REJOIN_AFTER):
            # slurmctld takes a powering-up node's registration only if the node booted
            # after the resume request, to the second: boot time = now - the uptime slurmd
            # reports, which `slurmd -b` counts from its own start in whole seconds of the
            # kernel's uptime. A registration whose count crossed a tick within the second
            # of the request is dropped without a log line (node_mgr.c,
            # waiting_for_node_boot), and Slurm never pings a powering-up node: it would wait
            # for ResumeTimeout. A slurmd started again now reports a later boot.
            actions.append(Action(Act.REJOIN, name,
                                  f"slurmd not registered {p.age:.0f} s after the node started"))
        elif (is_dynamic and powered_down and not in_transition and s.state in ("idle", "down")
              and p.state in ("running", "starting", "down") and p.age >= ORPHAN_GRACE):
            # Slurm does not count this node as up: nobody pays for a node nobody uses
            actions.append(Action(Act.REMOVE_ORPHAN, name, "powered down in Slurm"))
        elif (is_dynamic and s.state == "down" and powered_down and not in_transition
              and p.state == "absent"):
            if s.reason.startswith(LOST_PREFIX):
                # the lost node is gone: Slurm may create a fresh one whenever jobs need it
                actions.append(Action(Act.RETRY, name, "lost node removed"))
            elif ((s.reason.startswith(CAPACITY_PREFIX) and s.reason_age >= cooldown)
                  or (s.reason.startswith(RESUME_FAILED_PREFIX)
                      and s.reason_age >= cooldown / 4)):
                # the node set backed off (a failed boot for a shorter while than a quota
                # or capacity shortage); let Slurm ask for the node again
                actions.append(Action(Act.RETRY, name, "cooldown over"))
    return actions
