"""The control plane's Controller with a fake provider: capacity limits, failures reported as
data (a provider's refusal, a provider that raises), node ages, events."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cloudhpc.autoscale.control import Controller
from cloudhpc.events import EventLog
from cloudhpc.plan import NodeSpec, make_plan
from cloudhpc.providers.base import NodeInfo, NodeState, ProviderError
from cloudhpc.template import load

TEMPLATE = {"version": 1, "name": "ctl", "network": {"cidr": "10.9.0.0/24"},
            "head": {"size": "Standard_D4s_v5"},
            "compute": [{"name": "burst", "size": "Standard_D4s_v5", "min": 0, "max": 4}]}


class FakeProvider:
    def __init__(self, plan_nodes: list[NodeSpec]) -> None:
        self.made: dict[str, float] = {}
        self.plan_nodes = plan_nodes
        self.refuse: dict[str, str] = {}
        self.explode = False

    def launch(self, nodes: Sequence[NodeSpec]) -> list[ProviderError]:
        if self.explode:
            raise RuntimeError("the provider's API is down")
        errors = [ProviderError(n.nodeset, [n.name], self.refuse[n.name])
                  for n in nodes if n.name in self.refuse]
        for n in nodes:
            if n.name not in self.refuse:
                self.made[n.name] = 990.0
        return errors

    def terminate(self, names: Sequence[str]) -> None:
        for name in names:
            self.made.pop(name, None)

    def on_failure(self, report: Any) -> None:
        self.report = report

    def rejoin(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if n in self.made]

    def nodes(self) -> dict[str, NodeInfo]:
        return {n.name: NodeInfo(n.name, n.role, n.nodeset,
                                 NodeState.RUNNING if n.name in self.made else NodeState.ABSENT,
                                 n.address, n.name, "", self.made.get(n.name))
                for n in self.plan_nodes}

    def errors(self) -> list[ProviderError]:
        return []


class Clock:
    def time(self) -> float:
        return 1000.0

    def monotonic(self) -> float:
        return 5.0


def controller(tmp_path: Path, capacity: dict[str, int]) -> tuple[Controller, FakeProvider,
                                                                  EventLog]:
    template, _ = load(TEMPLATE)
    plan = make_plan(template)
    provider = FakeProvider(plan.compute())
    events = EventLog(tmp_path / "events.jsonl")
    return Controller(plan, provider, capacity, events, Clock()), provider, events


def test_capacity_refuses_beyond_the_limit_as_data(tmp_path: Path) -> None:
    ctl, provider, events = controller(tmp_path, {"burst": 2})
    reply = ctl.launch(["burst-1", "burst-2", "burst-3"])
    assert reply["launched"] == ["burst-1", "burst-2"]
    assert [f["node"] for f in reply["failed"]] == ["burst-3"]
    assert reply["failed"][0]["cause"].startswith("capacity: node set 'burst' is limited")
    assert [e["kind"] for e in events.read()] == ["node_failed", "node_launched",
                                                  "node_launched"]
    # a node already made counts against the limit; asking for it again does not
    assert ctl.launch(["burst-2", "burst-4"])["launched"] == ["burst-2"]


def test_provider_refusals_and_exceptions_become_failures(tmp_path: Path) -> None:
    ctl, provider, events = controller(tmp_path, {})
    provider.refuse = {"burst-2": "QuotaExceeded: cores"}
    reply = ctl.launch(["burst-1", "burst-2"])
    assert reply["launched"] == ["burst-1"]
    # a quota or capacity refusal backs the node set off for the cooldown (the reason's
    # prefix is what the reconciler reads), any other failure for a shorter while
    assert reply["failed"] == [{"node": "burst-2", "nodeset": "burst",
                                "cause": "capacity: QuotaExceeded: cores"}]
    provider.explode = True
    reply = ctl.launch(["burst-3"])
    assert reply == {"launched": [], "failed": [{
        "node": "burst-3", "nodeset": "burst",
        "cause": "resume failed: the provider's API is down"}]}
    assert [e["kind"] for e in events.read()][-1] == "node_failed"


def test_nodes_report_state_and_age_and_unknown_names_are_refused(tmp_path: Path) -> None:
    ctl, provider, events = controller(tmp_path, {})
    ctl.launch(["burst-1"])
    nodes = ctl.nodes()
    assert nodes["burst-1"] == {"state": "running", "nodeset": "burst", "detail": "",
                                "age": 10.0}
    assert nodes["burst-2"]["state"] == "absent" and nodes["burst-2"]["age"] == 0.0
    assert ctl.terminate(["burst-1"]) == {"terminated": ["burst-1"]}
    try:
        ctl.launch(["nosuch-1"])
    except ValueError as exc:
        assert "unknown nodes: nosuch-1" in str(exc)
    else:
        raise AssertionError("an unknown node was accepted")


def test_a_late_failure_keeps_its_reason_and_backs_the_node_set_off(tmp_path: Path) -> None:
    """Issue 14, finding 13, found by the rehearsal: Azure failed a VM minutes after
    accepting it (AllocationFailed); the control plane took the node out with Azure's
    message, and a moment later the reconciler, seeing a Failed VM as a dead node, replaced
    the reason with 'node lost: processes gone' and let Slurm retry at once."""
    from cloudhpc.autoscale.decide import Act, ProviderNode, decide
    from cloudhpc.providers.base import ProviderError
    from cloudhpc.slurm.client import SlurmNode

    taken: list[tuple[str, str]] = []
    ctl, provider, events = controller(tmp_path, {})
    ctl.take_out = lambda node, reason: taken.append((node, reason))
    ctl._late_failure(ProviderError("burst", ["burst-2"], "creating burst-2: "
                                    "AllocationFailed: no capacity for Standard_D4s_v5"))
    assert taken == [("burst-2", "capacity: creating burst-2: AllocationFailed: no capacity "
                                 "for Standard_D4s_v5")]
    down = SlurmNode("burst-2", "down", frozenset({"CLOUD"}), taken[0][1], 0.5)
    failed_vm = ProviderNode("burst-2", "down", "", 60.0)
    assert decide({"burst-2": down}, {"burst-2": failed_vm}, {"burst-2": True}, 300) == []
    lost = SlurmNode("burst-2", "allocated", frozenset({"CLOUD"}))
    assert [a.act for a in decide({"burst-2": lost}, {"burst-2": failed_vm},
                                  {"burst-2": True}, 300)] == [Act.FAIL_DYNAMIC]
