"""The Azure provider for autoscaling: Slurm's power-saving programs ask it to launch and
terminate nodes, exactly as they ask the local provider. A node is a VM named after its Slurm
node, created in its node set's Flexible scale set (azure-mgmt-compute), with a NIC at the
node's address in the plan (what slurm.conf and /etc/hosts say) and the node set's cloud-init
custom data with the cluster's secrets filled in, so that it boots into the same bootstrap as
the deployment's static nodes. Capacity and quota
failures (SkuNotAvailable, QuotaExceeded, AllocationFailed ...) become provider errors of the
node set, which backs off; Slurm's node and job reasons carry the message."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloudhpc.azure import arm, cloudinit, vm
from cloudhpc.azure.errors import AzureError, from_http, late_failure
from cloudhpc.azure.uniform import Assignments, UniformSets
from cloudhpc.plan import NodeSpec, Plan, Role
from cloudhpc.providers.base import NodeInfo, NodeState, ProviderError
from cloudhpc.template.schema import Template

STATES = {"Succeeded": NodeState.RUNNING, "Creating": NodeState.STARTING,
          "Updating": NodeState.STARTING, "Failed": NodeState.DOWN,
          "Deleting": NodeState.DOWN}


class AzureProvider:
    def __init__(self, template: Template, plan: Plan, subscription: str, resource_group: str,
                 credential: Any = None, secrets: dict[str, str] | None = None,
                 assignments: Assignments | None = None, **client_kwargs: Any) -> None:
        """SECRETS: the deployment's mungeKey and clusterToken parameters (the head has them
        in its cluster directory), put into new VMs' custom data, and its sshPublicKey (the
        admin user's key on the head)."""
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.resource import ResourceManagementClient

        if credential is None:
            from azure.identity import DefaultAzureCredential
            credential = DefaultAzureCredential()
        self.template, self.plan, self.rg = template, plan, resource_group
        self.subscription = subscription
        self.compute = ComputeManagementClient(credential, subscription, **client_kwargs)
        self.resources = ResourceManagementClient(credential, subscription, **client_kwargs)
        self.secrets = secrets or {}
        self._errors: list[ProviderError] = []
        self._report: Callable[[ProviderError], None] | None = None
        self.uniform = UniformSets(template, self.compute, resource_group, assignments or
                                   Assignments(Path("/nonexistent"), Path("/nonexistent")))
        self._uniform_sets = {ns.name for ns in template.compute if ns.rdma}

    def _id(self, rtype: str, name: str) -> str:
        """The id of a resource in the cluster's resource group."""
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.rg}/providers/"
                f"{rtype}/{name}")

    def _rid(self, rtype: str, name: str) -> str:
        return self._id(rtype, name)

    def _nic_id(self, node: NodeSpec) -> str:
        return self._id("Microsoft.Network/networkInterfaces", vm.nic_name(self.template, node))

    def _nic_body(self, node: NodeSpec) -> dict[str, Any]:
        subnet = self._id("Microsoft.Network/virtualNetworks",
                          f"{self.template.name}-vnet/subnets/cluster")
        return {"location": self.template.azure.region,
                "tags": {"cloudhpc-cluster": self.template.name, "cloudhpc-node": node.name},
                "properties": vm.nic_properties(node, subnet)}

    def _vm_body(self, node: NodeSpec) -> dict[str, Any]:
        """The same body as the deployment's static nodes (azure/vm.py), with values."""
        ns = next(s for s in self.template.compute if s.name == node.nodeset)
        text = cloudinit.user_data(self.template, "compute", ns.name).replace(
            cloudinit.MUNGE_KEY, self.secrets.get("mungeKey", "")).replace(
            cloudinit.CLUSTER_TOKEN, self.secrets.get("clusterToken", ""))
        admin = self.template.azure.admin_user
        values = vm.VmValues(admin, self.secrets.get("sshPublicKey", ""),
                             f"/home/{admin}/.ssh/authorized_keys",
                             base64.b64encode(text.encode()).decode(),
                             self.secrets.get("imageId", ""))
        return {"location": self.template.azure.region,
                "tags": vm.vm_tags(self.template, ns, node),
                "properties": vm.vm_properties(self.template, ns, node, values, self._rid)}

    def on_failure(self, report: Callable[[ProviderError], None]) -> None:
        self._report = report
        self.uniform.report = report

    def launch(self, nodes: Sequence[NodeSpec]) -> list[ProviderError]:
        """Ask Azure for every node at once and return: what Azure refuses when asked (quota,
        SkuNotAvailable, a bad request) is returned; a VM's provisioning, which takes minutes
        and may still fail (AllocationFailed, OSProvisioningTimedOut ...), is watched in the
        background, and a late failure goes to the on_failure report whenever it arrives
        (Slurm then takes the node out with Azure's message)."""
        from azure.core.exceptions import HttpResponseError

        errors: list[ProviderError] = []
        for nodeset in sorted({n.nodeset for n in nodes} & self._uniform_sets):
            errors += self.uniform.launch(nodeset, [n for n in nodes if n.nodeset == nodeset])
        nodes = [n for n in nodes if n.nodeset not in self._uniform_sets]
        pollers, failed, nics = [], [], []
        vms: Any = self.compute.virtual_machines  # REST-shaped dict bodies
        version = arm.API_VERSIONS["Microsoft.Network/networkInterfaces"]
        for node in nodes:  # the NICs first, all at once: the VMs need them
            try:
                nics.append((node, self.resources.resources.begin_create_or_update_by_id(
                    self._nic_id(node), version, self._nic_body(node))))
            except HttpResponseError as exc:
                failed.append((node, from_http(exc, f"creating {node.name}'s network "
                                                    "interface")))
        for node, poller in nics:
            try:
                poller.result()
                pollers.append((node, vms.begin_create_or_update(self.rg,
                                                                 vm.vm_name(self.template, node),
                                                                 self._vm_body(node))))
            except HttpResponseError as exc:
                failed.append((node, from_http(exc, f"creating {node.name}")))
        for node, poller in pollers:
            threading.Thread(target=self._watch, args=(node, poller), daemon=True,
                             name=f"watch-{node.name}").start()
        errors += [ProviderError(node.nodeset, [node.name], err.message) for node, err in failed]
        self._errors += errors
        return errors

    def _watch(self, node: NodeSpec, poller: Any) -> None:
        """Wait for a VM's provisioning; report a failure that arrives late. Losing contact
        with Azure while it is made (the SDK's retries spent) is reported as a failure too:
        Slurm takes the node out and its SuspendProgram removes whatever was made, and the
        job runs on a node made again, rather than waiting for ResumeTimeout."""
        from azure.core.exceptions import AzureError as SdkError

        try:
            poller.result()
        except SdkError as exc:
            error = ProviderError(node.nodeset, [node.name],
                                  late_failure(exc, f"creating {node.name}"))
            self._errors.append(error)
            if self._report is not None:
                self._report(error)

    def terminate(self, names: Sequence[str]) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        pollers = []
        for nodeset in self._uniform_sets:
            mine = [n for n in names if (spec := self.plan.node(n)) and spec.nodeset == nodeset]
            if mine:
                self.uniform.terminate(nodeset, mine)
        names = [n for n in names if not ((spec := self.plan.node(n)) and
                                          spec.nodeset in self._uniform_sets)]
        for name in names:
            try:
                spec = self.plan.node(name)
                vm_name = vm.vm_name(self.template, spec) if spec else name
                pollers.append(self.compute.virtual_machines.begin_delete(self.rg, vm_name))
            except ResourceNotFoundError:
                continue  # already gone
            except HttpResponseError as exc:
                raise from_http(exc, f"deleting {name}") from None
        for poller in pollers:
            poller.result()

    def rejoin(self, names: Sequence[str]) -> list[str]:
        """Nothing to do: a VM's slurmd registers a minute or more after the resume request,
        so the boot it reports is always later than the request and slurmctld takes it
        (the registration dropped locally comes within the request's own second). A slurmd
        that never registers is left to Slurm's ResumeTimeout (ResumeFailProgram)."""
        return []

    def nodes(self) -> dict[str, NodeInfo]:
        from azure.core.exceptions import HttpResponseError

        try:
            vms = list(self.compute.virtual_machines.list(self.rg))
        except HttpResponseError as exc:
            raise from_http(exc, "listing the cluster's VMs") from None
        found: dict[str, Any] = {}
        for machine in vms:
            tags = machine.tags or {}
            if tags.get("cloudhpc-cluster") == self.template.name and "cloudhpc-node" in tags:
                found[tags["cloudhpc-node"]] = machine
        uniform: dict[str, str] = {}
        for nodeset in self._uniform_sets:
            uniform.update(self.uniform.states(nodeset))
        out = {}
        for spec in self.plan.nodes:
            if spec.role is not Role.COMPUTE:
                continue
            if spec.nodeset in self._uniform_sets:
                st = uniform.get(spec.name)
                out[spec.name] = NodeInfo(spec.name, spec.role, spec.nodeset,
                                          STATES.get(st, NodeState.STARTING) if st
                                          else NodeState.ABSENT, "", "", "", None)
                continue
            found_vm = found.get(spec.name)
            state = STATES.get(found_vm.provisioning_state or "", NodeState.STARTING) \
                if found_vm else NodeState.ABSENT
            created = getattr(found_vm, "time_created", None) if found_vm else None
            out[spec.name] = NodeInfo(spec.name, spec.role, spec.nodeset, state, spec.address,
                                      str(found_vm.id) if found_vm else "", "",
                                      created.timestamp() if created else None)
        return out

    def errors(self) -> list[ProviderError]:
        return list(self._errors)


__all__ = ["AzureError", "AzureProvider"]
