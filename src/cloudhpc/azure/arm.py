"""Template -> ARM template (azuredeploy.json) and its parameters file. Pure, no I/O.

Resources: NSG (the head's SSH and API ports only, from the template's CIDRs), VNet and
subnet, optional public IP, head NIC and VM, a user-assigned identity with Virtual Machine
Contributor on the cluster's resource group only, per node set a Flexible VM scale set holding
its `min` nodes from the start (RDMA node sets: a proximity placement group and a single
placement group),
a storage account (HTTPS only, TLS 1.2, no anonymous access) and its container. Secrets are
securestring parameters, never literals."""

from __future__ import annotations

import base64
import re
from typing import Any

from cloudhpc.azure import cloudinit, vm
from cloudhpc.plan import API_PORT, NodeSpec, Plan, make_plan
from cloudhpc.template.schema import NodeSet, Template

SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
PARAMS_SCHEMA = ("https://schema.management.azure.com/schemas/2019-04-01/"
                 "deploymentParameters.json#")
# One pinned API version per resource type; the linter refuses any other.
API_VERSIONS = {
    "Microsoft.Network/networkSecurityGroups": "2023-09-01",
    "Microsoft.Network/virtualNetworks": "2023-09-01",
    "Microsoft.Network/publicIPAddresses": "2023-09-01",
    "Microsoft.Network/natGateways": "2023-09-01",
    "Microsoft.Network/networkInterfaces": "2023-09-01",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "2023-01-31",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
    "Microsoft.Compute/proximityPlacementGroups": "2023-09-01",
    "Microsoft.Compute/virtualMachineScaleSets": "2023-09-01",
    "Microsoft.Compute/virtualMachines": "2023-09-01",
    "Microsoft.Storage/storageAccounts": "2023-01-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2023-01-01",
}
VM_CONTRIBUTOR = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c"  # built-in role definition ids
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
ACCOUNT = "[resourceId('Microsoft.Storage/storageAccounts', variables('storageAccount'))]"
SSH_PORT = 22
CONTAINER = "cloudhpc"
RDMA_SUBNET = "rdma"


def _res(rtype: str, name: str, props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": rtype, "apiVersion": API_VERSIONS[rtype], "name": name}
    if rtype != "Microsoft.Authorization/roleAssignments":
        out["location"] = "[parameters('location')]"
    out.update(extra)
    out["properties"] = props
    return out


def _rid(rtype: str, *names: str) -> str:
    args = ", ".join(f"'{n}'" for n in names)
    return f"[resourceId('{rtype}', {args})]"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# what ARM puts where cloud-init's text has a placeholder
_PLACES = {cloudinit.MUNGE_KEY: "parameters('mungeKey')",
           cloudinit.CLUSTER_TOKEN: "parameters('clusterToken')",  # the head's alone
           cloudinit.STORAGE_ACCOUNT: "variables('storageAccount')"}


def custom_data(t: Template, role: str, nodeset: str | None = None) -> str:
    """ARM expression: base64 of the cloud-init text with the secure parameters (and the
    storage account's name) put in where its placeholders are (the text holds no secret)."""
    text = cloudinit.user_data(t, role, nodeset)
    pieces = re.split("(" + "|".join(map(re.escape, _PLACES)) + ")", text)
    parts = [_PLACES[p] if p in _PLACES else _literal(p) for p in pieces if p]
    return f"[base64(concat({', '.join(parts)}))]"


def _values(data: str) -> vm.VmValues:
    """The deployment's values: parameters, and the key's path made from the admin user
    parameter (Azure accepts only /home/<adminUsername>/.ssh/authorized_keys)."""
    return vm.VmValues("[parameters('adminUsername')]", "[parameters('sshPublicKey')]",
                       "[concat('/home/', parameters('adminUsername'), "
                       "'/.ssh/authorized_keys')]", data)


def _os_profile(t: Template, computer: str, key: str, role: str,
                nodeset: str | None, data: str | None = None) -> dict[str, Any]:
    """DATA: the custom data expression when the caller has it already."""
    return vm.os_profile(key, computer, _values(data or custom_data(t, role, nodeset)))


def _image(t: Template) -> dict[str, str]:
    return vm.image("[parameters('imageId')]")


def _arm_rid(rtype: str, name: str) -> str:
    return _rid(rtype, name)


def _names(t: Template) -> dict[str, str]:
    c = t.name
    return {"nsg": f"{c}-nsg", "vnet": f"{c}-vnet", "subnet": "cluster", "pip": f"{c}-head-ip",
            "nic": f"{c}-head-nic", "head": f"{c}-head", "identity": f"{c}-identity",
            "nat": f"{c}-nat", "nat_ip": f"{c}-nat-ip"}


def _nsg(t: Template, n: dict[str, str]) -> dict[str, Any]:
    rules = []
    for priority, (name, port, cidrs) in enumerate(
            (("allow-ssh", SSH_PORT, t.azure.ssh_cidrs),
             ("allow-api", API_PORT, t.azure.api_cidrs)), start=1):
        if cidrs:
            rules.append({"name": name, "properties": {
                "priority": 100 * priority, "direction": "Inbound", "access": "Allow",
                "protocol": "Tcp", "sourcePortRange": "*",
                "destinationPortRange": str(port), "sourceAddressPrefixes": list(cidrs),
                "destinationAddressPrefix": "VirtualNetwork"}})
    return _res("Microsoft.Network/networkSecurityGroups", n["nsg"], {"securityRules": rules})


def _vnet(t: Template, n: dict[str, str]) -> dict[str, Any]:
    nsg = _rid("Microsoft.Network/networkSecurityGroups", n["nsg"])
    prefixes = [t.network.cidr]
    subnets = [{"name": n["subnet"], "properties": {
        "addressPrefix": t.network.cidr, "networkSecurityGroup": {"id": nsg}}}]
    if any(ns.rdma for ns in t.compute):
        rdma = vm.rdma_subnet(t)
        prefixes.append(rdma)
        subnets.append({"name": RDMA_SUBNET, "properties": {
            "addressPrefix": rdma, "networkSecurityGroup": {"id": nsg}}})
    if t.storage.blob.enabled:
        # jobs stage data from every subnet, which has no way out by default: a service
        # endpoint takes storage traffic over Azure's backbone (virtual-network-service-
        # endpoints-overview)
        for subnet in subnets:
            subnet["properties"]["serviceEndpoints"] = [  # type: ignore[index]
                {"service": "Microsoft.Storage"}]
    deps = [nsg]
    if t.azure.nat_gateway:
        nat = _rid("Microsoft.Network/natGateways", n["nat"])
        for subnet in subnets:
            subnet["properties"]["natGateway"] = {"id": nat}  # type: ignore[index]
        deps.append(nat)
    return _res("Microsoft.Network/virtualNetworks", n["vnet"], {
        "addressSpace": {"addressPrefixes": prefixes}, "subnets": subnets,
    }, dependsOn=deps)


def _nat(t: Template, n: dict[str, str]) -> list[dict[str, Any]]:
    """The optional NAT gateway: outbound access for every VM of the cluster's subnets."""
    if not t.azure.nat_gateway:
        return []
    pip = _rid("Microsoft.Network/publicIPAddresses", n["nat_ip"])
    return [
        _res("Microsoft.Network/publicIPAddresses", n["nat_ip"],
             {"publicIPAllocationMethod": "Static"}, sku={"name": "Standard"}),
        _res("Microsoft.Network/natGateways", n["nat"],
             {"idleTimeoutInMinutes": 4, "publicIpAddresses": [{"id": pip}]},
             sku={"name": "Standard"}, dependsOn=[pip]),
    ]


def _subnet_id(n: dict[str, str], subnet: str | None = None) -> str:
    return _rid("Microsoft.Network/virtualNetworks/subnets", n["vnet"], subnet or n["subnet"])


def _head(t: Template, n: dict[str, str], address: str) -> list[dict[str, Any]]:
    vnet = _rid("Microsoft.Network/virtualNetworks", n["vnet"])
    identity = _rid("Microsoft.ManagedIdentity/userAssignedIdentities", n["identity"])
    nic = _rid("Microsoft.Network/networkInterfaces", n["nic"])
    # the plan's address: every node's /etc/hosts and slurm.conf name the head by it
    ipconf: dict[str, Any] = {"subnet": {"id": _subnet_id(n)},
                              "privateIPAllocationMethod": "Static",
                              "privateIPAddress": address}
    nic_deps = [vnet]
    out = []
    if t.azure.head_public_ip:
        pip = _rid("Microsoft.Network/publicIPAddresses", n["pip"])
        out.append(_res("Microsoft.Network/publicIPAddresses", n["pip"],
                        {"publicIPAllocationMethod": "Static"}, sku={"name": "Standard"}))
        ipconf["publicIPAddress"] = {"id": pip}
        nic_deps.append(pip)
    out.append(_res("Microsoft.Network/networkInterfaces", n["nic"], {
        "ipConfigurations": [{"name": "primary", "properties": ipconf}]}, dependsOn=nic_deps))
    out.append(_res("Microsoft.Compute/virtualMachines", n["head"],
                    _vm(t, t.head.size, "head", custom_data(t, "head"), nic),
                    identity={"type": "UserAssigned", "userAssignedIdentities": {identity: {}}},
                    dependsOn=[nic, identity]))
    return out


def _vm(t: Template, size: str, computer: str, data: str, nic: str) -> dict[str, Any]:
    """A VM outside any scale set (head, login nodes) with its one NIC; the disk and NIC go
    with the VM: `down` in an existing group leaves nothing."""
    return {
        "hardwareProfile": {"vmSize": size},
        "osProfile": vm.os_profile("computerName", computer, _values(data)),
        "storageProfile": {"imageReference": _image(t),
                           "osDisk": {"createOption": "FromImage", "deleteOption": "Delete",
                                      "managedDisk": {"storageAccountType": "Premium_LRS"}}},
        "networkProfile": {"networkInterfaces": [
            {"id": nic, "properties": {"primary": True, "deleteOption": "Delete"}}]},
    }


def _login(t: Template, n: dict[str, str], plan: Plan) -> list[dict[str, Any]]:
    """Login nodes: plain VMs at the plan's addresses (no identity, no Slurm daemon; munge,
    the Slurm clients and /shared over NFS), each with a public IP if its set asks."""
    vnet = _rid("Microsoft.Network/virtualNetworks", n["vnet"])
    data = custom_data(t, "login")
    out: list[dict[str, Any]] = []
    for node in plan.login():
        ls = next(s for s in t.login if node.name.startswith(f"{s.name}-"))
        nic = _rid("Microsoft.Network/networkInterfaces", vm.nic_name(t, node))
        props = vm.nic_properties(node, _subnet_id(n))
        deps = [vnet]
        if ls.public_ip:
            pip_name = f"{vm.vm_name(t, node)}-ip"
            pip = _rid("Microsoft.Network/publicIPAddresses", pip_name)
            out.append(_res("Microsoft.Network/publicIPAddresses", pip_name,
                            {"publicIPAllocationMethod": "Static"}, sku={"name": "Standard"}))
            props["ipConfigurations"][0]["properties"]["publicIPAddress"] = {"id": pip}
            deps.append(pip)
        out.append(_res("Microsoft.Network/networkInterfaces", vm.nic_name(t, node), props,
                        dependsOn=deps))
        out.append(_res("Microsoft.Compute/virtualMachines", vm.vm_name(t, node),
                        _vm(t, node.size, node.name, data, nic),
                        tags={"cloudhpc-cluster": t.name, "cloudhpc-role": "login"},
                        dependsOn=[nic]))
    return out


def _identity(n: dict[str, str]) -> list[dict[str, Any]]:
    identity = _rid("Microsoft.ManagedIdentity/userAssignedIdentities", n["identity"])
    return [
        _res("Microsoft.ManagedIdentity/userAssignedIdentities", n["identity"], {}),
        # deployed into the resource group, so the assignment's scope is that group only
        _res("Microsoft.Authorization/roleAssignments",
             f"[guid(resourceGroup().id, '{n['identity']}', '{VM_CONTRIBUTOR}')]", {
                 "roleDefinitionId": "[subscriptionResourceId("
                 "'Microsoft.Authorization/roleDefinitions', "
                 f"'{VM_CONTRIBUTOR}')]",
                 "principalId": f"[reference({identity[1:-1]}).principalId]",
                 "principalType": "ServicePrincipal"}, dependsOn=[identity]),
    ]


def _nodeset(t: Template, n: dict[str, str], ns: NodeSet, plan: Plan) -> list[dict[str, Any]]:
    if ns.rdma:
        return _uniform(t, n, ns)
    return _flexible(t, n, ns, plan)


def _profile(t: Template, n: dict[str, str], ns: NodeSet, subnet: str | None,
             data: str) -> dict[str, Any]:
    return {
        "osProfile": _os_profile(t, ns.name if subnet is None else f"{ns.name}-",
                                 "computerNamePrefix", "compute", ns.name, data),
        "storageProfile": {"imageReference": _image(t),
                           "osDisk": {"createOption": "FromImage",
                                      "managedDisk": {"storageAccountType": "Premium_LRS"}}},
        "networkProfile": {
            **({"networkApiVersion": "2020-11-01"} if subnet is None else {}),
            "networkInterfaceConfigurations": [{
                "name": f"{ns.name}-nic", "properties": {
                    "primary": True, "enableAcceleratedNetworking": True,
                    "ipConfigurations": [{"name": "primary", "properties": {
                        "subnet": {"id": _subnet_id(n, subnet)}}}]}}]},
    }


def _flexible(t: Template, n: dict[str, str], ns: NodeSet, plan: Plan) -> list[dict[str, Any]]:
    """A Flexible scale set and its `min` static nodes.

    The static nodes are named members of the scale set (VMs created with the scale set's id)
    rather than instances the scale set names itself (capacity 0 for its own model): Slurm
    must know every node's name and address before it boots, and an instance named by Azure
    with a dynamic address would never match slurm.conf. The provider creates the dynamic
    nodes the same way when Slurm powers them up."""
    vnet = _rid("Microsoft.Network/virtualNetworks", n["vnet"])
    data = custom_data(t, "compute", ns.name)  # the same for all of the node set's VMs
    props: dict[str, Any] = {
        "orchestrationMode": "Flexible",
        "platformFaultDomainCount": 1,
        # VMs join only a scale set whose singlePlacementGroup is false (attach/detach docs)
        "singlePlacementGroup": False,
        "virtualMachineProfile": _profile(t, n, ns, None, data),
    }
    tags = {"cloudhpc-cluster": t.name, "cloudhpc-nodeset": ns.name}
    out = [_res("Microsoft.Compute/virtualMachineScaleSets", vm.scale_set_name(t, ns), props,
                sku={"name": ns.size, "tier": "Standard", "capacity": 0},
                tags=tags, dependsOn=[vnet])]
    vmss = _rid("Microsoft.Compute/virtualMachineScaleSets", vm.scale_set_name(t, ns))
    for node in plan.compute():
        if node.nodeset == ns.name and not node.dynamic:
            out += _static_node(t, n, ns, node, vmss, None, data)
    return out


def _uniform(t: Template, n: dict[str, str], ns: NodeSet) -> list[dict[str, Any]]:
    """An RDMA node set: a Uniform scale set with one placement group — InfiniBand is not
    supported in Flexible orchestration, VMs cannot join a scale set with a single placement
    group, and a placement group holds at most 100 VMs (the node set's max, checked) — in a
    proximity placement group, in the RDMA subnet (addresses Azure gives). Azure names its
    instances; the head tells each booted instance its Slurm node name, and Slurm learns its
    address when it registers (cloud_reg_addrs). Capacity 0: Slurm starts nodes for jobs."""
    vnet = _rid("Microsoft.Network/virtualNetworks", n["vnet"])
    name = vm.scale_set_name(t, ns)
    ppg = _rid("Microsoft.Compute/proximityPlacementGroups", vm.ppg_name(t, ns))
    props: dict[str, Any] = {
        "orchestrationMode": "Uniform",
        "singlePlacementGroup": True,
        "overprovision": False,  # an extra instance would be a node nobody asked for
        "platformFaultDomainCount": 1,
        "upgradePolicy": {"mode": "Manual"},
        "proximityPlacementGroup": {"id": ppg},
        "virtualMachineProfile": _profile(t, n, ns, RDMA_SUBNET,
                                          custom_data(t, "compute", ns.name)),
    }
    tags = {"cloudhpc-cluster": t.name, "cloudhpc-nodeset": ns.name}
    return [
        _res("Microsoft.Compute/proximityPlacementGroups", vm.ppg_name(t, ns),
             {"proximityPlacementGroupType": "Standard"}),
        _res("Microsoft.Compute/virtualMachineScaleSets", name, props,
             sku={"name": ns.size, "tier": "Standard", "capacity": 0}, tags=tags,
             dependsOn=[vnet, ppg]),
    ]


def _static_node(t: Template, n: dict[str, str], ns: NodeSet, node: NodeSpec, vmss: str,
                 ppg: str | None, data: str) -> list[dict[str, Any]]:
    """A NIC at the plan's address and a VM named after the Slurm node, in the scale set:
    the body the control plane also uses for the nodes it creates (azure/vm.py)."""
    nic = _rid("Microsoft.Network/networkInterfaces", vm.nic_name(t, node))
    deps = [nic, vmss] + ([ppg] if ppg else [])
    return [
        _res("Microsoft.Network/networkInterfaces", vm.nic_name(t, node),
             vm.nic_properties(node, _subnet_id(n)),
             dependsOn=[_rid("Microsoft.Network/virtualNetworks", n["vnet"])]),
        _res("Microsoft.Compute/virtualMachines", vm.vm_name(t, node),
             vm.vm_properties(t, ns, node, _values(data), _arm_rid),
             tags=vm.vm_tags(t, ns, node), dependsOn=deps),
    ]


def _storage(t: Template, n: dict[str, str]) -> list[dict[str, Any]]:
    """The blob store: no keys (Shared Key refused), reached by the head's managed identity
    with Storage Blob Data Contributor on this account only; jobs get user delegation SAS
    (https://learn.microsoft.com/azure/storage/common/shared-key-authorization-prevent,
    https://learn.microsoft.com/azure/storage/blobs/assign-azure-role-data-access)."""
    account = "[variables('storageAccount')]"
    identity = _rid("Microsoft.ManagedIdentity/userAssignedIdentities", n["identity"])
    return [
        _res("Microsoft.Storage/storageAccounts", account, {
            "supportsHttpsTrafficOnly": True, "minimumTlsVersion": "TLS1_2",
            "allowBlobPublicAccess": False, "allowSharedKeyAccess": False,
            "defaultToOAuthAuthentication": True},
            sku={"name": "Standard_LRS"}, kind="StorageV2"),
        {"type": "Microsoft.Authorization/roleAssignments",
         "apiVersion": API_VERSIONS["Microsoft.Authorization/roleAssignments"],
         "name": f"[guid({ACCOUNT[1:-1]}, '{n['identity']}', '{BLOB_DATA_CONTRIBUTOR}')]",
         "scope": ACCOUNT,
         "dependsOn": [ACCOUNT, identity],
         "properties": {
             "roleDefinitionId": "[subscriptionResourceId("
             "'Microsoft.Authorization/roleDefinitions', "
             f"'{BLOB_DATA_CONTRIBUTOR}')]",
             "principalId": f"[reference({identity[1:-1]}).principalId]",
             "principalType": "ServicePrincipal"}},
        {"type": "Microsoft.Storage/storageAccounts/blobServices/containers",
         "apiVersion": API_VERSIONS["Microsoft.Storage/storageAccounts/blobServices/containers"],
         "name": f"[concat(variables('storageAccount'), '/default/{CONTAINER}')]",
         "dependsOn": ["[resourceId('Microsoft.Storage/storageAccounts', "
                       "variables('storageAccount'))]"],
         "properties": {"publicAccess": "None"}},
    ]


def export(t: Template) -> tuple[dict[str, Any], dict[str, Any]]:
    """(azuredeploy.json, azuredeploy.parameters.json) for a template."""
    n = _names(t)
    plan = make_plan(t.model_copy(update={"provider": "azure"}))
    resources: list[dict[str, Any]] = [_nsg(t, n), *_nat(t, n), _vnet(t, n), *_identity(n),
                                       *_head(t, n, plan.head.address)]
    for ns in t.compute:
        resources += _nodeset(t, n, ns, plan)
    resources += _login(t, n, plan)
    resources += _storage(t, n)
    secure = {"type": "securestring"}
    nic = _rid("Microsoft.Network/networkInterfaces", n["nic"])[1:-1]
    head_ip = f"[reference({nic}).ipConfigurations[0].properties.privateIPAddress]"
    arm = {
        "$schema": SCHEMA,
        "contentVersion": "1.0.0.0",
        "metadata": {"generator": "cloudhpc", "cluster": t.name},
        "parameters": {
            "location": {"type": "string", "defaultValue": t.azure.region or "eastus",
                         "metadata": {"description": "Azure region"}},
            "adminUsername": {"type": "string", "defaultValue": t.azure.admin_user},
            "imageId": {"type": "string", "metadata": {
                "description": "resource id of the node image built from cloudhpc's recipe "
                "(`cloudhpc image export`, then Packer): a managed image or a gallery image "
                "version"}},
            "sshPublicKey": {**secure, "metadata": {
                "description": "SSH public key of the admin user"}},
            "mungeKey": {**secure, "metadata": {
                "description": "base64 of 1024 random bytes: the cluster's munge key"}},
            "clusterToken": {**secure, "metadata": {
                "description": "token the head and the nodes use for cloudhpc's control "
                "plane"}},
        },
        "variables": {
            # the cluster in the name: two clusters in one group get two accounts
            "storageAccount": "[concat('chpc', uniqueString(resourceGroup().id, "
                              f"'{t.name}'))]",
        },
        "resources": resources,
        "outputs": {
            "headPrivateIp": {"type": "string", "value": head_ip},
            "storageAccount": {"type": "string", "value": "[variables('storageAccount')]"},
        },
    }
    params = {
        "$schema": PARAMS_SCHEMA,
        "contentVersion": "1.0.0.0",
        # secrets are not written here: pass them at deployment (see the README)
        "parameters": {"location": {"value": t.azure.region or "eastus"},
                       "adminUsername": {"value": t.azure.admin_user}},
    }
    return arm, params


def decode_custom_data(expression: str, values: dict[str, str]) -> str:
    """Evaluate a custom_data expression with the given parameter values (tests, dry runs)."""
    inner = expression[len("[base64(concat("):-len("))]")]
    out, i = [], 0
    while i < len(inner):
        if inner[i] == "'":
            j, buf = i + 1, []
            while True:
                if inner[j] == "'" and inner[j + 1:j + 2] == "'":
                    buf.append("'")
                    j += 2
                elif inner[j] == "'":
                    break
                else:
                    buf.append(inner[j])
                    j += 1
            out.append("".join(buf))
            i = j + 1
        elif inner.startswith("parameters('", i):
            end = inner.index("')", i)
            out.append(values[inner[i + len("parameters('"):end]])
            i = end + 2
        elif inner.startswith("variables('", i):  # the storage account's name
            end = inner.index("')", i)
            name = inner[i + len("variables('"):end]
            out.append(values.get(name, "chpc" + "x" * 13))  # uniqueString: 13 characters
            i = end + 2
        else:
            i += 1  # ", "
    return base64.b64encode("".join(out).encode()).decode()
