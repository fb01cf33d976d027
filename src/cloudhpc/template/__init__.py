"""Template: schema (pydantic v2), loading with line numbers, validators with levels."""

from cloudhpc.template.findings import Finding, Level
from cloudhpc.template.loader import load
from cloudhpc.template.schema import NodeSet, Template

__all__ = ["Finding", "Level", "NodeSet", "Template", "load"]
