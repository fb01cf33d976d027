"""RDMA node sets on Azure: Slurm nodes as instances of a Uniform scale set.

Azure names a Uniform scale set's instances (computerNamePrefix + 6 base-36 digits) and gives
their addresses, so a node's name is assigned by the head: when Slurm powers up hb-3, the
head raises the scale set's capacity, takes the new instance, and writes the node's name to
/shared/.cloudhpc/names/<computer name> (the head's file, which the instance reads at boot:
its cloudhpc-node unit waits for it and starts slurmd as that node). Slurm learns the
instance's address when slurmd registers (SlurmctldParameters=cloud_reg_addrs). The head keeps
the assignments (node -> instance id, computer name) in its state directory; powering a node
down deletes exactly its instance."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloudhpc.azure import vm
from cloudhpc.azure.errors import from_http, late_failure
from cloudhpc.plan import NodeSpec
from cloudhpc.providers.base import ProviderError
from cloudhpc.secretfile import write_secret
from cloudhpc.template.schema import Template

NAMES_DIR = ".cloudhpc/names"  # under the cluster's /shared
LIST_WAIT = 120  # seconds for Azure to list the instances a capacity change asked for


class Assignments:
    """node name -> {"instance": id, "computer": computer name}, kept 0600 on the head."""

    def __init__(self, path: Path, names: Path) -> None:
        self.path, self.names = path, names
        self.lock = threading.Lock()

    def load(self) -> dict[str, dict[str, str]]:
        try:
            data: dict[str, dict[str, str]] = json.loads(self.path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def _save(self, data: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_secret(self.path, json.dumps(data, sort_keys=True))

    def assign(self, node: str, instance: str, computer: str) -> None:
        with self.lock:
            data = self.load()
            data[node] = {"instance": instance, "computer": computer}
            self._save(data)
        self.names.mkdir(parents=True, exist_ok=True)
        (self.names / computer).write_text(node + "\n")  # root's, read by the instance

    def release(self, node: str) -> dict[str, str] | None:
        with self.lock:
            data = self.load()
            found = data.pop(node, None)
            self._save(data)
        if found:
            (self.names / found["computer"]).unlink(missing_ok=True)
        return found


class UniformSets:
    """Launch, list and remove nodes of the template's RDMA node sets."""

    def __init__(self, template: Template, compute: Any, rg: str,
                 assignments: Assignments) -> None:
        self.t, self.compute, self.rg, self.assignments = template, compute, rg, assignments
        self._locks: dict[str, threading.Lock] = {}
        self.report: Callable[[ProviderError], None] | None = None

    def _lock(self, vmss: str) -> threading.Lock:
        return self._locks.setdefault(vmss, threading.Lock())

    def _instances(self, vmss: str) -> dict[str, Any]:
        return {str(i.instance_id): i for i in
                self.compute.virtual_machine_scale_set_vms.list(self.rg, vmss)}

    def launch(self, nodeset: str, nodes: Sequence[NodeSpec]) -> list[ProviderError]:
        """Raise the scale set's capacity by len(NODES) and name the new instances as soon
        as Azure lists them; their provisioning is watched in the background (a late
        failure goes to REPORT)."""
        from azure.core.exceptions import HttpResponseError

        ns = next(s for s in self.t.compute if s.name == nodeset)
        vmss = vm.scale_set_name(self.t, ns)
        names = [n.name for n in nodes]
        try:
            with self._lock(vmss):
                before = self._instances(vmss)
                taken = {a["instance"] for a in self.assignments.load().values()}
                current = self.compute.virtual_machine_scale_sets.get(self.rg, vmss)
                capacity = int(current.sku.capacity or 0) + len(nodes)
                poller = self.compute.virtual_machine_scale_sets.begin_update(
                    self.rg, vmss, {"sku": {"name": ns.size, "capacity": capacity}})
                deadline = time.monotonic() + LIST_WAIT
                while True:
                    after = self._instances(vmss)
                    fresh = sorted((i for i in after if i not in before and i not in taken),
                                   key=int)
                    if len(fresh) >= len(nodes) or time.monotonic() > deadline:
                        break
                    time.sleep(2)
                for node, instance in zip(names, fresh, strict=False):
                    computer = after[instance].os_profile.computer_name
                    self.assignments.assign(node, instance, computer)
        except HttpResponseError as exc:
            err = from_http(exc, f"adding {len(nodes)} instance(s) to {vmss}")
            return [ProviderError(nodeset, names, err.message)]
        threading.Thread(target=self._watch, args=(nodeset, vmss, names, poller),
                         daemon=True).start()
        missing = [n for n in names if n not in self.assignments.load()]
        if missing:
            return [ProviderError(nodeset, missing, f"{vmss} gave fewer instances than asked")]
        return []

    def _watch(self, nodeset: str, vmss: str, names: list[str], poller: Any) -> None:
        """A late failure of the scale set's growth, Azure's refusal or contact lost, is
        the failure of the nodes asked for (see AzureProvider._watch)."""
        from azure.core.exceptions import AzureError as SdkError

        try:
            poller.result()
        except SdkError as exc:
            if self.report is not None:
                self.report(ProviderError(nodeset, names, late_failure(
                    exc, f"adding {', '.join(names)} to {vmss}")))

    def terminate(self, nodeset: str, names: Sequence[str]) -> None:
        from azure.core.exceptions import HttpResponseError

        ns = next(s for s in self.t.compute if s.name == nodeset)
        vmss = vm.scale_set_name(self.t, ns)
        ids = []
        for name in names:
            found = self.assignments.release(name)
            if found:
                ids.append(found["instance"])
        if not ids:
            return
        try:
            with self._lock(vmss):
                self.compute.virtual_machine_scale_sets.begin_delete_instances(
                    self.rg, vmss, {"instanceIds": ids}).result()
        except HttpResponseError as exc:
            raise from_http(exc, f"deleting {', '.join(names)} from {vmss}") from None

    def states(self, nodeset: str) -> dict[str, str]:
        """node -> provisioning state of its instance (absent nodes are left out)."""
        ns = next(s for s in self.t.compute if s.name == nodeset)
        instances = self._instances(vm.scale_set_name(self.t, ns))
        out = {}
        for node, a in self.assignments.load().items():
            inst = instances.get(a["instance"])
            if inst is not None and node.startswith(f"{nodeset}-"):
                out[node] = str(inst.provisioning_state or "Creating")
        return out
