"""How a cluster network is shared out (used by the plan and by template validation)."""

from __future__ import annotations

import ipaddress

FIXED_ADDRESSES = 3  # this machine (the gateway), head, storage


def nodeset_share(cidr: str, nodesets: int) -> int:
    """Addresses each node set owns: an equal, fixed slice of the network, so that a node
    set can grow (`cloudhpc scale`) without moving any other node's address."""
    net = ipaddress.ip_network(cidr)
    return max(0, (net.num_addresses - 2 - FIXED_ADDRESSES) // max(1, nodesets))
