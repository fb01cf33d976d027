"""cloudhpc: declare an HPC cluster once; bring it up locally in seconds or on Azure."""

from cloudhpc.cluster import Cluster
from cloudhpc.errors import CloudHPCError
from cloudhpc.template import Template

__all__ = ["Cluster", "CloudHPCError", "Template"]
__version__ = "0.1.0"
