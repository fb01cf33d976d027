"""Template validation: each bad input gives one finding with path, line and fix."""

from __future__ import annotations

import textwrap

import pytest

from cloudhpc.errors import TemplateError
from cloudhpc.template import Level, load
from cloudhpc.template.loader import check, parse_yaml

GOOD = """\
version: 1
name: demo
network:
  cidr: 198.18.0.0/24
compute:
  - name: hpc
    size: Standard_D4s_v5
    min: 2
    max: 2
  - name: mpi
    size: Standard_HB120rs_v3
    min: 0
    max: 4
    rdma: true
"""


def findings(text: str, running: list[tuple[str, str]] | None = None):  # type: ignore[no-untyped-def]
    data, lines = parse_yaml(textwrap.dedent(text))
    return check(data, lines, running)[1]


def errors(text: str, running: list[tuple[str, str]] | None = None) -> list[str]:
    return [str(f) for f in findings(text, running) if f.level is Level.ERROR]


def test_good_template_has_no_errors() -> None:
    assert errors(GOOD) == []
    assert [f for f in findings(GOOD) if f.level is Level.WARNING] == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    max: 2\n  - name: mpi", "    maxx: 2\n  - name: mpi",
         "compute[0].maxx: unknown key 'maxx', line 9 — did you mean 'max'?"),
        ("network:", "netwrk:", "netwrk: unknown key 'netwrk', line 3 — did you mean 'network'?"),
        ("    min: 2", "    min: two",
         "compute[0].min: expected a whole number, got 'two', line 8"),
        ("    min: 2\n    max: 2", "    min: 3\n    max: 2",
         "compute[0].max: must be >= min (got 2 < 3), line 9 — set max to at least 3"),
        ("198.18.0.0/24", "198.18.0.0/29",
         "network.cidr: too small: compute[0] (hpc) has max 2 nodes but each of the 2"),
        ("198.18.0.0/24", "198.18.0.1/24", "network.cidr: not an IPv4 network"),
        ("name: mpi", "name: hpc", "compute[1].name: duplicate node set name 'hpc'"),
        ("Standard_D4s_v5", "Standard_D4s_v9",
         "compute[0].size: unknown VM size 'Standard_D4s_v9', line 7 — did you mean"),
        ("name: demo", "name: Demo_1", "name: bad cluster name 'Demo_1', line 2"),
        ("Standard_HB120rs_v3", "Standard_D4s_v5",
         "compute[1].size: Standard_D4s_v5 has no RDMA"),
        ("version: 1", "version: 2", "version: Input should be 1 (got 2), line 1"),
        ("name: demo\n", "", "name: required key is missing"),
        ("    rdma: true", "    rdma: true\nlocal:\n  capacity:\n    gpu: 1",
         "local.capacity.gpu: no node set named 'gpu', line 17"),
        ("    rdma: true", "    rdma: true\n    idle_timeout: 1",
         "compute[1].idle_timeout: Input should be greater than or equal to 5 (got 1)"),
    ],
)
def test_bad_template(old: str, new: str, expected: str) -> None:
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    found = errors(text)
    assert any(expected in f for f in found), found


def test_overlap_with_running_cluster() -> None:
    found = errors(GOOD, running=[("other", "198.18.0.0/16")])
    assert any("network.cidr: overlaps cluster 'other'" in f for f in found), found


def test_not_yaml_reports_line() -> None:
    with pytest.raises(TemplateError) as info:
        data, lines = parse_yaml("version: 1\nname: [oops\n", "t.yaml")
    assert info.value.findings[0].line == 3 or info.value.findings[0].line == 2  # type: ignore[attr-defined]


def test_load_from_python_dict() -> None:
    template, _ = load({"version": 1, "name": "fromdict",
                        "compute": [{"name": "a", "size": "Standard_D2s_v5", "min": 1, "max": 1}]})
    assert template.compute[0].name == "a"
    assert template.network.cidr == "198.18.0.0/24"


def test_load_raises_with_every_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("min: 2", "min: 5").replace("name: mpi", "name: hpc"))
    with pytest.raises(TemplateError) as info:
        load(path)
    assert len(info.value.findings) == 2
    assert str(path) in str(info.value)


def test_a_stored_template_of_an_earlier_version_still_loads() -> None:
    """Every daemon reads the cluster's stored template at each (re)start: a field an
    earlier cloudhpc wrote must not make it fail. Seen: after `azure.package` was removed,
    a running cluster's reconciler and control plane exited on their next restart
    ("Extra inputs are not permitted") and its nodes were never healed."""
    from cloudhpc.template.schema import Template

    stored = {"version": 1, "name": "old", "network": {"cidr": "198.19.99.0/24"},
              "compute": [{"name": "hpc", "size": "Standard_D4s_v5", "min": 1, "max": 1}],
              "azure": {"package": "cloudhpc"}}
    assert Template.model_validate(stored).name == "old"
