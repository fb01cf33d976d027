"""How a cluster network is shared out (used by the plan and by template validation)."""

from __future__ import annotations

import ipaddress

FIXED_ADDRESSES = 3  # this machine (the gateway), head, storage
# Azure keeps .1 (gateway, as our host does locally) and also .2 and .3 (DNS) of a subnet
PROVIDER_RESERVED = {"local": 0, "azure": 2}


def first_free(provider: str) -> int:
    """Offset from the network address of the head node's address."""
    return 2 + PROVIDER_RESERVED.get(provider, 0)


def nodeset_share(cidr: str, nodesets: int, provider: str = "local") -> int:
    """Addresses each node set owns: an equal, fixed slice of the network, so that a node
    set can grow (`cloudhpc scale`) without moving any other node's address."""
    net = ipaddress.ip_network(cidr)
    used = 2 + FIXED_ADDRESSES + PROVIDER_RESERVED.get(provider, 0)
    return max(0, (net.num_addresses - used) // max(1, nodesets))


def login_address(cidr: str, index: int) -> str:
    """The INDEXth login node's address: from the network's end down (the last address is
    the broadcast address, which Azure keeps too), so that declaring login nodes moves no
    compute node; validation refuses a network where they would meet."""
    net = ipaddress.ip_network(cidr)
    return str(net.broadcast_address - 1 - index)
