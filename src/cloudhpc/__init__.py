"""cloudhpc: declare an HPC cluster once; bring it up locally in seconds or on Azure."""

from __future__ import annotations

from typing import Any

__all__ = ["Cluster", "CloudHPCError", "Template"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy, so that the small node-side entry points (supervisor, power-save programs)
    # start without importing pydantic and the rest.
    if name == "Cluster":
        from cloudhpc.cluster import Cluster

        return Cluster
    if name == "CloudHPCError":
        from cloudhpc.errors import CloudHPCError

        return CloudHPCError
    if name == "Template":
        from cloudhpc.template import Template

        return Template
    raise AttributeError(name)
