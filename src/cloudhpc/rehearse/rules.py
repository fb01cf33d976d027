"""Azure's documented rules that the rehearsal enforces, one table: each rule with the
Microsoft page that states it. They are checked on the deployed (evaluated) resources, the
template deployment's and each SDK request's alike, against the resource group's world."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cloudhpc import sizes

DOCS = "https://learn.microsoft.com/azure/"
Resource = dict[str, Any]  # id, type, name, location, properties, sku, tags, dependsOn
World = dict[str, Resource]  # lower-case id -> resource


@dataclass(frozen=True)
class Violation:
    code: str       # Azure's error code where Azure has one
    rule: str
    message: str


@dataclass(frozen=True)
class Rule:
    rule: str
    code: str
    text: str
    reference: str
    check: Callable[[Resource, World], Iterator[str]]


def _props(r: Resource) -> dict[str, Any]:
    return r.get("properties") or {}


def _get(world: World, rid: str | None) -> Resource | None:
    return world.get((rid or "").lower())


def _vm_in_flex_set(r: Resource, world: World) -> Iterator[str]:
    ref = (_props(r).get("virtualMachineScaleSet") or {}).get("id")
    if r["type"] != "Microsoft.Compute/virtualMachines" or not ref:
        return
    vmss = _get(world, ref)
    if vmss is None:
        yield f"the scale set {ref} does not exist"
        return
    p = _props(vmss)
    if p.get("orchestrationMode") != "Flexible":
        yield f"{r['name']} joins {vmss['name']}, a Uniform scale set: only Flexible scale " \
              "sets take VMs"
    elif p.get("singlePlacementGroup") is not False:
        yield f"{r['name']} joins {vmss['name']}, whose singlePlacementGroup is not false"


def _flex_infiniband(r: Resource, world: World) -> Iterator[str]:
    if r["type"] != "Microsoft.Compute/virtualMachineScaleSets":
        return
    size = sizes.lookup((r.get("sku") or {}).get("name", ""))
    if _props(r).get("orchestrationMode") == "Flexible" and size and size.rdma:
        yield f"{r['name']}: {size.name} is an InfiniBand size and InfiniBand is not " \
              "supported in Flexible orchestration"


def _linux_profile(r: Resource) -> tuple[dict[str, Any], str] | None:
    p = _props(r)
    profile = p.get("osProfile") or (p.get("virtualMachineProfile") or {}).get("osProfile")
    if not profile or "linuxConfiguration" not in profile:
        return None
    return profile, profile.get("adminUsername", "")


def _linux_auth(r: Resource, world: World) -> Iterator[str]:
    found = _linux_profile(r)
    if found is None:
        return
    linux = found[0]["linuxConfiguration"]
    keys = (linux.get("ssh") or {}).get("publicKeys") or []
    if linux.get("disablePasswordAuthentication") and not any(k.get("keyData") for k in keys):
        yield "Authentication using either SSH or by user name and password must be " \
              "enabled in Linux profile."


def _ssh_key_path(r: Resource, world: World) -> Iterator[str]:
    found = _linux_profile(r)
    if found is None:
        return
    profile, admin = found
    for key in ((profile["linuxConfiguration"].get("ssh") or {}).get("publicKeys") or []):
        if key.get("path") != f"/home/{admin}/.ssh/authorized_keys":
            yield f"the SSH key path {key.get('path')!r} is not " \
                  f"/home/{admin}/.ssh/authorized_keys"


def _custom_data(r: Resource, world: World) -> Iterator[str]:
    import base64
    import binascii
    found = _linux_profile(r)
    data = (found[0].get("customData") if found else None) or ""
    try:
        n = len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        yield "customData is not base64"
        return
    if n > 65_535:
        yield f"custom data of {n:,} bytes: at most 64 KB"


def _role_assignment(r: Resource, world: World) -> Iterator[str]:
    if r["type"] == "Microsoft.Authorization/roleAssignments":
        caller = world.get("@caller-role", {}).get("name", "Owner")
        if caller not in ("Owner", "User Access Administrator",
                          "Role Based Access Control Administrator"):
            yield f"the deployment creates a role assignment ({r['name']}), which needs " \
                  f"Microsoft.Authorization/roleAssignments/write; the caller is {caller}"


def _storage_name(r: Resource, world: World) -> Iterator[str]:
    import re
    if r["type"] == "Microsoft.Storage/storageAccounts" and not re.fullmatch(
            r"[a-z0-9]{3,24}", r["name"]):
        yield f"storage account name {r['name']!r}: 3-24 lowercase letters and digits"


def _subnet_of(nic: Resource, world: World) -> tuple[str, Any] | None:
    for conf in _props(nic).get("ipConfigurations") or []:
        sid = ((conf.get("properties") or {}).get("subnet") or {}).get("id", "")
        vnet_id, _, name = sid.rpartition("/subnets/")
        vnet = _get(world, vnet_id)
        if vnet is None:
            continue
        for s in _props(vnet).get("subnets") or []:
            if s["name"] == name:
                return sid.lower(), ipaddress.ip_network(s["properties"]["addressPrefix"])
    return None


def _nic_address(r: Resource, world: World) -> Iterator[str]:
    if r["type"] != "Microsoft.Network/networkInterfaces":
        return
    found = _subnet_of(r, world)
    for conf in _props(r).get("ipConfigurations") or []:
        address = (conf.get("properties") or {}).get("privateIPAddress")
        if not address or found is None:
            continue
        sid, net = found
        ip = ipaddress.ip_address(address)
        if ip not in net:
            yield f"{address} is not in the subnet {net}"
            continue
        reserved = [net.network_address + i for i in range(4)] + [net.broadcast_address]
        if ip in reserved:
            yield f"{address} is reserved by Azure in {net} (the first four and the last " \
                  "address of a subnet)"
        for other in world.values():
            if other is r or other.get("type") != r["type"] or other["id"] == r["id"]:
                continue
            for c in _props(other).get("ipConfigurations") or []:
                if (c.get("properties") or {}).get("privateIPAddress") == address and \
                        (_subnet_of(other, world) or ("",))[0] == sid:
                    yield f"{address} is already used by {other['name']}"


def _subnet_in_vnet(r: Resource, world: World) -> Iterator[str]:
    if r["type"] != "Microsoft.Network/virtualNetworks":
        return
    spaces = [ipaddress.ip_network(p) for p in
              (_props(r).get("addressSpace") or {}).get("addressPrefixes") or []]
    for s in _props(r).get("subnets") or []:
        net = ipaddress.ip_network(s["properties"]["addressPrefix"])
        if not any(net.subnet_of(space) for space in spaces):  # type: ignore[arg-type]
            yield f"subnet {s['name']} ({net}) is outside the address space"


def _nsg_priority(r: Resource, world: World) -> Iterator[str]:
    if r["type"] != "Microsoft.Network/networkSecurityGroups":
        return
    seen: set[tuple[str, int]] = set()
    for rule in _props(r).get("securityRules") or []:
        p = rule.get("properties") or {}
        key = (p.get("direction", ""), int(p.get("priority", 0)))
        if not 100 <= key[1] <= 4096:
            yield f"rule {rule.get('name')}: priority {key[1]} is not within 100-4096"
        if key in seen:
            yield f"rule {rule.get('name')}: priority {key[1]} is used twice ({key[0]})"
        seen.add(key)


def _placement_group_size(r: Resource, world: World) -> Iterator[str]:
    if r["type"] != "Microsoft.Compute/virtualMachineScaleSets":
        return
    capacity = int((r.get("sku") or {}).get("capacity") or 0)
    if _props(r).get("singlePlacementGroup") is not False and capacity > 100:
        yield f"{r['name']}: {capacity} instances in a single placement group (at most 100)"


def _flex_fault_domains(r: Resource, world: World) -> Iterator[str]:
    p = _props(r)
    if r["type"] == "Microsoft.Compute/virtualMachineScaleSets" and \
            p.get("orchestrationMode") == "Flexible" and "platformFaultDomainCount" not in p:
        yield f"{r['name']}: a Flexible scale set must set platformFaultDomainCount"


def _names(r: Resource, world: World) -> Iterator[str]:
    limits = {"Microsoft.Compute/virtualMachines": 64,
              "Microsoft.Compute/virtualMachineScaleSets": 64,
              "Microsoft.Network/networkInterfaces": 80}
    limit = limits.get(r["type"])
    if limit and len(r["name"]) > limit:
        yield f"the name {r['name']!r} has more than {limit} characters"
    found = _linux_profile(r)
    if found and len(found[0].get("computerName", "")) > 64:
        yield "a Linux computer name has at most 64 characters"


RULES = [
    Rule("A VM can join only a Flexible scale set, and only one whose singlePlacementGroup is "
         "false", "OperationNotAllowed",
         "VMs join Flexible scale sets whose singlePlacementGroup is false",
         DOCS + "virtual-machine-scale-sets/virtual-machine-scale-sets-attach-detach-vm",
         _vm_in_flex_set),
    Rule("InfiniBand is not supported in Flexible orchestration", "OperationNotAllowed",
         "RDMA sizes in Uniform scale sets",
         DOCS + "virtual-machine-scale-sets/virtual-machine-scale-sets-orchestration-modes",
         _flex_infiniband),
    Rule("A Linux profile enables SSH keys or a password", "InvalidParameter",
         "SSH key or password", DOCS + "virtual-machines/linux/create-ssh-keys-detailed",
         _linux_auth),
    Rule("An SSH public key's path is /home/<adminUsername>/.ssh/authorized_keys",
         "InvalidParameter", "the key's path follows the admin user",
         "https://learn.microsoft.com/rest/api/compute/virtual-machines/create-or-update"
         "#sshpublickey", _ssh_key_path),
    Rule("Custom data is base64 of at most 64 KB", "InvalidParameter", "custom data ≤ 64 KB",
         DOCS + "virtual-machines/custom-data", _custom_data),
    Rule("Creating a role assignment needs Microsoft.Authorization/roleAssignments/write "
         "(Owner, User Access Administrator; not Contributor)", "AuthorizationFailed",
         "role assignments need Owner or User Access Administrator",
         DOCS + "role-based-access-control/role-assignments-template", _role_assignment),
    Rule("Storage account names: 3-24 lowercase letters and digits", "AccountNameInvalid",
         "storage account names",
         DOCS + "azure-resource-manager/management/resource-name-rules#microsoftstorage",
         _storage_name),
    Rule("A static private address lies in its subnet, is not one of the five Azure reserves "
         "(the first four and the last), and is not used twice", "PrivateIPAddressInUse",
         "static addresses",
         DOCS + "virtual-network/virtual-networks-faq#are-there-any-restrictions-on-using-ip-"
         "addresses-within-these-subnets", _nic_address),
    Rule("A subnet lies inside its virtual network's address space",
         "NetcfgSubnetRangeOutsideVnet", "subnets inside the VNet",
         DOCS + "virtual-network/virtual-network-manage-subnet", _subnet_in_vnet),
    Rule("NSG rule priorities are 100-4096 and unique per direction",
         "SecurityRuleInvalidPriority", "NSG priorities",
         DOCS + "virtual-network/network-security-groups-overview#security-rules",
         _nsg_priority),
    Rule("A single placement group holds at most 100 VMs", "InvalidParameter",
         "placement groups of ≤ 100",
         DOCS + "virtual-machine-scale-sets/virtual-machine-scale-sets-placement-groups",
         _placement_group_size),
    Rule("A Flexible scale set sets platformFaultDomainCount", "InvalidParameter",
         "fault domains of Flexible sets",
         DOCS + "virtual-machine-scale-sets/virtual-machine-scale-sets-orchestration-modes",
         _flex_fault_domains),
    Rule("VM and scale-set names at most 64 characters, NIC names 80, Linux computer names "
         "64", "InvalidResourceName", "name lengths",
         DOCS + "azure-resource-manager/management/resource-name-rules", _names),
]


def check(resource: Resource, world: World) -> list[Violation]:
    return [Violation(rule.code, rule.rule, message)
            for rule in RULES for message in rule.check(resource, world)]


def markdown_table() -> str:
    """The README's table of the rules the rehearsal enforces."""
    lines = ["| rule | Azure error | reference |", "|---|---|---|"]
    for r in RULES:
        lines.append(f"| {r.rule} | `{r.code}` | {r.reference} |")
    return "\n".join(lines)
