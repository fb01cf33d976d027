"""The shipped table of Azure VM sizes (vCPUs, memory, RDMA)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class VMSize:
    name: str
    vcpus: int
    memory_gib: int
    rdma: bool
    family: str


@cache
def table() -> dict[str, VMSize]:
    raw = json.loads(resources.files("cloudhpc").joinpath("data/sizes.json").read_text())
    return {name: VMSize(name=name, **spec) for name, spec in raw["sizes"].items()}


def lookup(name: str) -> VMSize | None:
    return table().get(name)


def suggest(name: str) -> str | None:
    hits = difflib.get_close_matches(name, list(table()), n=1, cutoff=0.6)
    return hits[0] if hits else None
