"""The Azure provider for autoscaling: Slurm's power-saving programs ask it to launch and
terminate nodes, exactly as they ask the local provider. A node is a VM named after its Slurm
node, created in its node set's Flexible scale set (azure-mgmt-compute). Capacity and quota
failures (SkuNotAvailable, QuotaExceeded, AllocationFailed ...) become provider errors of the
node set, which backs off; Slurm's node and job reasons carry the message."""

from __future__ import annotations

from typing import Any

from cloudhpc.azure import arm
from cloudhpc.azure.errors import AzureError, from_http
from cloudhpc.plan import NodeSpec, Plan, Role
from cloudhpc.providers.base import NodeInfo, NodeState, ProviderError
from cloudhpc.template.schema import Template

STATES = {"Succeeded": NodeState.RUNNING, "Creating": NodeState.STARTING,
          "Updating": NodeState.STARTING, "Failed": NodeState.DOWN,
          "Deleting": NodeState.DOWN}


class AzureProvider:
    def __init__(self, template: Template, plan: Plan, subscription: str, resource_group: str,
                 credential: Any = None, **client_kwargs: Any) -> None:
        from azure.mgmt.compute import ComputeManagementClient

        if credential is None:
            from azure.identity import DefaultAzureCredential
            credential = DefaultAzureCredential()
        self.template, self.plan, self.rg = template, plan, resource_group
        self.subscription = subscription
        self.compute = ComputeManagementClient(credential, subscription, **client_kwargs)
        self._errors: list[ProviderError] = []

    def _scale_set_id(self, nodeset: str) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.rg}/providers/"
                f"Microsoft.Compute/virtualMachineScaleSets/"
                f"{self.template.name}-{nodeset}-vmss")

    def _vm_body(self, node: NodeSpec) -> dict[str, Any]:
        ns = next(s for s in self.template.compute if s.name == node.nodeset)
        subnet = (f"/subscriptions/{self.subscription}/resourceGroups/{self.rg}/providers/"
                  f"Microsoft.Network/virtualNetworks/{self.template.name}-vnet/subnets/"
                  "cluster")
        return {
            "location": self.template.azure.region,
            "tags": {"cloudhpc-cluster": self.template.name, "cloudhpc-nodeset": ns.name,
                     "cloudhpc-node": node.name},
            "properties": {
                "virtualMachineScaleSet": {"id": self._scale_set_id(ns.name)},
                "hardwareProfile": {"vmSize": ns.size},
                "osProfile": {"computerName": node.name,
                              "adminUsername": self.template.azure.admin_user,
                              "linuxConfiguration": {"disablePasswordAuthentication": True}},
                "networkProfile": {
                    "networkApiVersion": "2020-11-01",
                    "networkInterfaceConfigurations": [{
                        "name": f"{node.name}-nic", "properties": {
                            "primary": True, "deleteOption": "Delete",
                            "ipConfigurations": [{"name": "primary", "properties": {
                                "subnet": {"id": subnet},
                                "privateIPAddressVersion": "IPv4"}}]}}]},
                "storageProfile": {"imageReference": arm._image(self.template),
                                   "osDisk": {"createOption": "FromImage",
                                              "deleteOption": "Delete"}},
            },
        }

    def launch(self, nodes: list[NodeSpec]) -> list[ProviderError]:
        """Start creating every node at once (one request each, polled together); a node
        that exists already is left alone. Returns (and records) the failures."""
        from azure.core.exceptions import HttpResponseError

        pollers, failed = [], []
        vms: Any = self.compute.virtual_machines  # REST-shaped dict bodies
        for node in nodes:
            try:
                pollers.append((node, vms.begin_create_or_update(self.rg, node.name,
                                                                 self._vm_body(node))))
            except HttpResponseError as exc:
                failed.append((node, from_http(exc, f"creating {node.name}")))
        for node, poller in pollers:
            try:
                poller.result()
            except HttpResponseError as exc:
                failed.append((node, from_http(exc, f"creating {node.name}")))
        errors = [ProviderError(node.nodeset, [node.name], err.message) for node, err in failed]
        self._errors += errors
        return errors

    def terminate(self, names: list[str]) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        pollers = []
        for name in names:
            try:
                pollers.append(self.compute.virtual_machines.begin_delete(self.rg, name))
            except ResourceNotFoundError:
                continue  # already gone
            except HttpResponseError as exc:
                raise from_http(exc, f"deleting {name}") from None
        for poller in pollers:
            poller.result()

    def nodes(self) -> dict[str, NodeInfo]:
        from azure.core.exceptions import HttpResponseError

        try:
            vms = list(self.compute.virtual_machines.list(self.rg))
        except HttpResponseError as exc:
            raise from_http(exc, "listing the cluster's VMs") from None
        found: dict[str, Any] = {}
        for vm in vms:
            tags = vm.tags or {}
            if tags.get("cloudhpc-cluster") == self.template.name and "cloudhpc-node" in tags:
                found[tags["cloudhpc-node"]] = vm
        out = {}
        for spec in self.plan.nodes:
            if spec.role is not Role.COMPUTE:
                continue
            found_vm = found.get(spec.name)
            state = STATES.get(found_vm.provisioning_state or "", NodeState.STARTING) \
                if found_vm else NodeState.ABSENT
            out[spec.name] = NodeInfo(spec.name, spec.role, spec.nodeset, state, spec.address,
                                      str(found_vm.id) if found_vm else "")
        return out

    def errors(self) -> list[ProviderError]:
        return list(self._errors)


__all__ = ["AzureError", "AzureProvider"]
