"""Helpers for the benchmarks: a throw-away state directory and clusters that are always
removed, even when the benchmark fails."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cloudhpc.cluster import Cluster


def template(name: str, cidr: str, nodes: int, size: str = "Standard_D16s_v5",
             nodeset: str = "hpc") -> dict[str, Any]:
    return {"version": 1, "name": name, "network": {"cidr": cidr},
            "compute": [{"name": nodeset, "size": size, "min": nodes, "max": nodes}]}


@contextmanager
def bench_home() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="cloudhpc-bench-") as home:
        old = os.environ.get("CLOUDHPC_HOME")
        os.environ["CLOUDHPC_HOME"] = home
        try:
            yield home
        finally:
            if old is None:
                os.environ.pop("CLOUDHPC_HOME", None)
            else:
                os.environ["CLOUDHPC_HOME"] = old


@contextmanager
def cluster(spec: dict[str, Any]) -> Iterator[Cluster]:
    c = Cluster.up(spec)
    try:
        yield c
    finally:
        c.down()
