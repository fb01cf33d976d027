"""The one body of a compute node's VM and NIC, for both ways a node is made on Azure: the
ARM template's static nodes (values are template expressions) and the nodes the control
plane creates through the SDK when Slurm powers them up (values are literals). Only the
values differ (`VmValues`); the body cannot drift between the two."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloudhpc.plan import NodeSpec
from cloudhpc.template.schema import NodeSet, Template

DISK = {"storageAccountType": "Premium_LRS"}

# a resource's id from its type and name: an ARM resourceId() expression, or a full id
ResourceId = Callable[[str, str], str]


@dataclass(frozen=True)
class VmValues:
    admin_user: str    # parameters('adminUsername') or the user
    ssh_key: str       # the public key (a parameter in ARM)
    ssh_key_path: str  # where it goes: /home/<admin user>/.ssh/authorized_keys
    custom_data: str   # base64 cloud-init with the secrets in
    image_id: str = "[parameters('imageId')]"  # the node image's resource id


def image(image_id: str) -> dict[str, str]:
    """The node image built from cloudhpc's recipe (image/provision.sh), by resource id (a
    managed image or a gallery image version): nothing is installed at boot."""
    return {"id": image_id}


def os_profile(computer_key: str, computer: str, v: VmValues) -> dict[str, Any]:
    """Linux with SSH keys only: Azure refuses a Linux profile that has neither a key nor a
    password ("Authentication using either SSH or by user name and password must be
    enabled in Linux profile")."""
    return {
        computer_key: computer,
        "adminUsername": v.admin_user,
        "customData": v.custom_data,
        "linuxConfiguration": {
            "disablePasswordAuthentication": True,
            "ssh": {"publicKeys": [{"path": v.ssh_key_path, "keyData": v.ssh_key}]},
        },
    }


def scale_set_name(t: Template, ns: NodeSet) -> str:
    return f"{t.name}-{ns.name}-vmss"


def rdma_subnet(t: Template) -> str:
    """The subnet of the RDMA node sets' instances: addresses Azure gives them never meet
    the plan's addresses of named VMs in the cluster subnet."""
    if t.azure.rdma_cidr:
        return t.azure.rdma_cidr
    import ipaddress

    net = ipaddress.ip_network(t.network.cidr)
    return str(ipaddress.ip_network(f"{net.broadcast_address + 1}/{net.prefixlen}"))


def ppg_name(t: Template, ns: NodeSet) -> str:
    return f"{t.name}-{ns.name}-ppg"


def vm_name(t: Template, node: NodeSpec) -> str:
    """Azure's name of a node's VM: the cluster's name first, so that two clusters share a
    resource group without colliding (the host name stays the Slurm node name)."""
    return f"{t.name}-{node.name}"


def nic_name(t: Template, node: NodeSpec) -> str:
    return f"{vm_name(t, node)}-nic"


def nic_properties(node: NodeSpec, subnet_id: str) -> dict[str, Any]:
    """A NIC at the plan's address (what slurm.conf and /etc/hosts say)."""
    return {"enableAcceleratedNetworking": True,
            "ipConfigurations": [{"name": "primary", "properties": {
                "subnet": {"id": subnet_id}, "privateIPAllocationMethod": "Static",
                "privateIPAddress": node.address}}]}


def vm_properties(t: Template, ns: NodeSet, node: NodeSpec, v: VmValues,
                  rid: ResourceId) -> dict[str, Any]:
    """A VM named after its Slurm node, a member of its node set's scale set, whose OS disk
    and NIC go with it."""
    props: dict[str, Any] = {
        "virtualMachineScaleSet": {"id": rid("Microsoft.Compute/virtualMachineScaleSets",
                                             scale_set_name(t, ns))},
        "hardwareProfile": {"vmSize": ns.size},
        "osProfile": os_profile("computerName", node.name, v),
        "storageProfile": {"imageReference": image(v.image_id),
                           "osDisk": {"createOption": "FromImage", "deleteOption": "Delete",
                                      "managedDisk": dict(DISK)}},
        "networkProfile": {"networkInterfaces": [{
            "id": rid("Microsoft.Network/networkInterfaces", nic_name(t, node)),
            "properties": {"primary": True, "deleteOption": "Delete"}}]},
    }
    if ns.rdma:
        props["proximityPlacementGroup"] = {
            "id": rid("Microsoft.Compute/proximityPlacementGroups", ppg_name(t, ns))}
    return props


def vm_tags(t: Template, ns: NodeSet, node: NodeSpec) -> dict[str, str]:
    return {"cloudhpc-cluster": t.name, "cloudhpc-nodeset": ns.name,
            "cloudhpc-node": node.name}
