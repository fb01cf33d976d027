"""The reconciler's decisions as a table: (Slurm's view, provider's view) -> action."""

from __future__ import annotations

import pytest

from cloudhpc.autoscale.decide import REJOIN_AFTER, Act, ProviderNode, SlurmNode, decide
from cloudhpc.events import EventKind, EventLog

UP = frozenset({"CLOUD"})
OFF = frozenset({"CLOUD", "POWERED_DOWN"})
RISING = frozenset({"CLOUD", "POWERING_UP"})


@pytest.mark.parametrize(
    ("dynamic", "slurm", "provider", "expected"),
    [
        # static nodes
        (False, ("idle", frozenset(), "", 0), "running", None),
        (False, ("idle", frozenset(), "", 0), "down", Act.REPLACE),
        (False, ("down", frozenset(), "Not responding", 40), "absent", Act.REPLACE),
        (False, ("idle", frozenset(), "", 0), "starting", None),
        # dynamic nodes
        (True, ("idle", OFF, "", 0), "absent", None),
        (True, ("allocated", UP, "", 0), "running", None),
        (True, ("allocated", UP, "", 0), "down", Act.FAIL_DYNAMIC),
        (True, ("idle", OFF, "", 0), "running", Act.REMOVE_ORPHAN),
        (True, ("idle", OFF, "", 0), "down", Act.REMOVE_ORPHAN),
        (True, ("allocated", RISING, "", 0), "starting", None),
        # running for 30 s and still not registered: its registration was not taken
        (True, ("idle", RISING | {"NOT_RESPONDING"}, "", 0), "running", Act.REJOIN),
        (True, ("idle", frozenset({"CLOUD", "POWERED_DOWN", "POWERING_DOWN"}), "", 0),
         "running", None),
        (True, ("down", OFF, "capacity: node set 'a' is limited", 10), "absent", None),
        (True, ("down", OFF, "capacity: node set 'a' is limited", 61), "absent", Act.RETRY),
        (True, ("down", OFF, "resume failed: timeout", 16), "absent", Act.RETRY),
        (True, ("down", OFF, "resume failed: timeout", 5), "absent", None),
        (True, ("allocated", OFF, "", 0), "running", None),
        (True, ("down", OFF, "node lost: processes gone", 0), "absent", Act.RETRY),
        (True, ("down", OFF | {"POWERING_DOWN"}, "node lost: x", 0), "absent", None),
        (True, ("down", OFF, "set by an admin", 600), "absent", None),
    ],
)
def test_decide_table(dynamic: bool, slurm: tuple[str, frozenset[str], str, float],
                      provider: str, expected: Act | None) -> None:
    state, flags, reason, age = slurm
    actions = decide({"n-1": SlurmNode("n-1", state, flags, reason, age)},
                     {"n-1": ProviderNode("n-1", provider, age=30)}, {"n-1": dynamic},
                     cooldown=60)
    assert [a.act for a in actions] == ([expected] if expected else [])


@pytest.mark.parametrize(("age", "expected"), [(1.0, []), (REJOIN_AFTER - 0.1, []),
                                                (REJOIN_AFTER, [Act.REJOIN])])
def test_a_node_gets_time_to_register_before_it_is_told_again(
        age: float, expected: list[Act]) -> None:
    slurm = SlurmNode("n-1", "idle", RISING | {"NOT_RESPONDING"})
    actions = decide({"n-1": slurm}, {"n-1": ProviderNode("n-1", "running", age=age)},
                     {"n-1": True}, cooldown=60)
    assert [a.act for a in actions] == expected


def test_decide_ignores_nodes_missing_from_a_view() -> None:
    assert decide({}, {"n-1": ProviderNode("n-1", "down")}, {"n-1": False}, 60) == []


def test_event_log_appends_and_filters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log = EventLog(tmp_path / "events.jsonl")
    first = log.emit(EventKind.NODE_LAUNCHED, node="a-1")
    log.emit(EventKind.JOB_SUBMITTED, job=3)
    (tmp_path / "events.jsonl").open("a").write('{"partial": ')  # a torn last line
    assert [e["kind"] for e in log.read()] == ["node_launched", "job_submitted"]
    assert log.read(kinds={"job_submitted"})[0]["job"] == 3
    assert log.read(since=first["time"] + 3600) == []


def test_young_node_is_not_an_orphan() -> None:
    """Slurm may not yet show a node it is resuming; a young node is left alone."""
    slurm = {"n-1": SlurmNode("n-1", "idle", OFF)}
    young = {"n-1": ProviderNode("n-1", "running", age=1.0)}
    assert decide(slurm, young, {"n-1": True}, 60) == []
