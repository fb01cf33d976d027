"""The rehearsal's Resource Manager: resource groups, template deployments and the resources
cloudhpc uses, kept as Azure keeps them (ids, provisioning states, deployment operations),
with Azure's documented rules (rules.py) checked on every resource before it is created.

Resources that run something are handed to a `Platform` (vms.py boots VM sandboxes; the
storage account is served by Azurite). The world is saved to a JSON file after every change,
so the endpoint can restart without losing what it deployed."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cloudhpc.azure import limits
from cloudhpc.rehearse import rules
from cloudhpc.rehearse.expressions import Context, Evaluator, ExpressionError

DEPENDENCIES = ("https://learn.microsoft.com/azure/azure-resource-manager/templates/"
                "resource-dependency")
RUNNING = "Running"
VMSS = "Microsoft.Compute/virtualMachineScaleSets"
VMSS_VM = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
VMSS_NIC = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/networkInterfaces"
VM_TYPES = ("Microsoft.Compute/virtualMachines", VMSS_VM)
NIC_TYPES = ("Microsoft.Network/networkInterfaces", VMSS_NIC)
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"


class ArmError(Exception):
    """An Azure error response: HTTP status, code, message."""

    def __init__(self, status: int, code: str, message: str,
                 details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or []

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class Platform(Protocol):
    """What runs behind resources: VMs, storage."""

    def create(self, resource: dict[str, Any], world: dict[str, dict[str, Any]]) -> None: ...

    def delete(self, resource: dict[str, Any]) -> None: ...


class NoPlatform:
    """Resources that only exist as records (a dry rehearsal of the control plane)."""

    def create(self, resource: dict[str, Any], world: dict[str, dict[str, Any]]) -> None:
        pass

    def delete(self, resource: dict[str, Any]) -> None:
        pass


def type_of(rid: str) -> str:
    """Microsoft.Compute/virtualMachines from a resource id."""
    tail = rid.split("/providers/", 1)[1].split("/")
    return "/".join([tail[0]] + tail[1::2])


def group_of(rid: str) -> str:
    parts = rid.split("/")
    return "/".join(parts[:5]).lower()


@dataclass
class Engine:
    state_file: Path
    platform: Platform = field(default_factory=NoPlatform)
    caller_role: str = "Owner"
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # asynchronous operations (Azure-AsyncOperation): id -> {"status", "error"}
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    # VM size -> how many VMs of it the region can allocate (a rehearsal of capacity
    # shortages: the next one fails late with AllocationFailed); read at each creation
    capacity_file: Path | None = None

    # --- persistence ---------------------------------------------------------------------
    @classmethod
    def load(cls, state_file: Path, platform: Platform | None = None,
             caller_role: str = "Owner") -> Engine:
        engine = cls(state_file, platform or NoPlatform(), caller_role)
        if state_file.exists():
            data = json.loads(state_file.read_text())
            engine.groups, engine.resources = data["groups"], data["resources"]
            engine.deployments = data["deployments"]
        return engine

    def save(self) -> None:
        with self.lock:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"groups": self.groups, "resources": self.resources,
                                       "deployments": self.deployments}))
            tmp.replace(self.state_file)

    # --- resource groups -----------------------------------------------------------------
    def put_group(self, sub: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        gid = f"/subscriptions/{sub}/resourceGroups/{name}"
        with self.lock:
            group = self.groups.setdefault(gid.lower(), {
                "id": gid, "name": name, "type": "Microsoft.Resources/resourceGroups",
                "location": body.get("location", ""),
                "properties": {"provisioningState": "Succeeded"}})
            group["tags"] = body.get("tags") or group.get("tags") or {}
            self.save()
            return group

    def group(self, sub: str, name: str) -> dict[str, Any]:
        gid = f"/subscriptions/{sub}/resourceGroups/{name}".lower()
        if gid not in self.groups:
            raise ArmError(404, "ResourceGroupNotFound",
                           f"Resource group '{name}' could not be found.")
        return self.groups[gid]

    def delete_group(self, sub: str, name: str) -> None:
        gid = self.group(sub, name)["id"].lower()
        for rid in [r for r in self.resources if group_of(r) == gid][::-1]:
            r = self.resources.get(rid)  # a VM's NIC and disk may have gone with it
            if r is not None:
                self.delete(r["id"])
        with self.lock:
            for did in [d for d in self.deployments if group_of(d) == gid]:
                del self.deployments[did]
            del self.groups[gid]
            self.save()

    # --- resources -----------------------------------------------------------------------
    def world(self, extra: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        out = dict(self.resources)
        for r in extra or []:
            out[r["id"].lower()] = r
        out["@caller-role"] = {"name": self.caller_role}
        return out

    def get(self, rid: str) -> dict[str, Any]:
        r = self.resources.get(rid.lower())
        if r is None:
            raise ArmError(404, "ResourceNotFound",
                           f"The Resource '{type_of(rid)}/{rid.rsplit('/', 1)[1]}' under "
                           f"resource group '{rid.split('/')[4]}' was not found.")
        return r

    def in_group(self, group_id: str, rtype: str | None = None) -> list[dict[str, Any]]:
        return [r for rid, r in self.resources.items() if group_of(rid) == group_id.lower()
                and (rtype is None or r["type"].lower() == rtype.lower())]

    def _record(self, rid: str, body: dict[str, Any]) -> dict[str, Any]:
        r = {"id": rid, "name": rid.rsplit("/", 1)[1], "type": type_of(rid),
             "location": body.get("location", ""), "tags": body.get("tags") or {},
             "properties": dict(body.get("properties") or {})}
        for key in ("sku", "kind", "identity", "zones"):
            if key in body:
                r[key] = body[key]
        if r["type"] == ROLE_ASSIGNMENT:  # Azure reports where it applies (default: group)
            r["properties"].setdefault("scope", body.get("scope") or group_of(rid))
        return r

    def validate(self, r: dict[str, Any], world: dict[str, dict[str, Any]]) -> None:
        found = rules.check(r, world)
        if found:
            raise ArmError(400, found[0].code, f"{r['name']}: {found[0].message} "
                           f"({found[0].rule})",
                           [{"code": v.code, "message": v.message} for v in found])

    def put(self, rid: str, body: dict[str, Any],
            world_extra: list[dict[str, Any]] | None = None,
            wait: bool = True) -> dict[str, Any]:
        """Create or update a resource: rules first, then the platform; returns it. A VM
        without WAIT is created as Azure does: the request is accepted (provisioning state
        Creating, an operation to poll) and provisioning goes on; it may fail later."""
        if group_of(rid) not in self.groups:
            raise ArmError(404, "ResourceGroupNotFound",
                           f"Resource group '{rid.split('/')[4]}' could not be found.")
        r = self._record(rid, body)
        with self.lock:
            old = self.resources.get(rid.lower())
            if old is not None:
                r["properties"] = {**old["properties"], **r["properties"]}
            self.validate(r, self.world((world_extra or []) + [r]))
            self._fill(r)
            r["properties"]["provisioningState"] = "Creating" if old is None else "Updating"
            self.resources[rid.lower()] = r
            self._attach(r)
            self.save()
        if not wait and r["type"] in VM_TYPES and old is None:
            op = uuid.uuid4().hex
            self.operations[op] = {"status": "InProgress"}
            r["_operation"] = op
            threading.Thread(target=self._provision, args=(r, op), daemon=True).start()
            return r
        try:
            self._allocate(r)
            self.platform.create(r, self.world())
        except ArmError:
            with self.lock:
                self.resources.pop(rid.lower(), None)
                self.save()
            raise
        with self.lock:
            r["properties"]["provisioningState"] = "Succeeded"
            self.save()
        if r["type"] == VMSS and r["properties"].get("orchestrationMode") == "Uniform":
            self._scale(r)
        return r

    def _allocate(self, r: dict[str, Any]) -> None:
        """AllocationFailed when the rehearsal's capacity for the VM's size is used up."""
        if r["type"] not in VM_TYPES or self.capacity_file is None or \
                not self.capacity_file.exists():
            return
        size = ((r["properties"].get("hardwareProfile") or {}).get("vmSize")
                or (r.get("sku") or {}).get("name"))
        limit = json.loads(self.capacity_file.read_text()).get(size)
        if limit is None:
            return
        with self.lock:
            used = sum(1 for o in self.resources.values()
                       if o is not r and o["type"] in VM_TYPES
                       and o["properties"].get("provisioningState") != "Failed"
                       and ((o["properties"].get("hardwareProfile") or {}).get("vmSize")
                            or (o.get("sku") or {}).get("name")) == size)
        if used >= limit:
            raise ArmError(409, "AllocationFailed",
                           "Allocation failed. We do not have sufficient capacity for the "
                           f"requested VM size {size} in this region. (rehearsal capacity "
                           f"{limit})")

    def _provision(self, r: dict[str, Any], op: str) -> None:
        try:
            time.sleep(1)  # allocation is not instantaneous: failures come late
            self._allocate(r)
            self.platform.create(r, self.world())
            state = "Succeeded"
            status: dict[str, Any] = {"status": "Succeeded"}
        except ArmError as exc:
            state = "Failed"
            status = {"status": "Failed", "error": {"code": exc.code, "message": exc.message}}
        except Exception as exc:  # noqa: BLE001 - a VM that never boots is Azure's failure
            state = "Failed"
            status = {"status": "Failed", "error": {"code": "OSProvisioningInternalError",
                                                    "message": str(exc)}}
        with self.lock:
            r["properties"]["provisioningState"] = state
            r.pop("_operation", None)
            self.operations[op] = status
            self.save()

    def patch(self, rid: str, body: dict[str, Any]) -> dict[str, Any]:
        """PATCH: the body merged into what is there (sku, tags, properties)."""
        old = self.get(rid)
        merged = {k: v for k, v in old.items() if k in ("location", "sku", "tags", "identity")}
        merged["properties"] = {**old["properties"], **(body.get("properties") or {})}
        if "sku" in body:
            merged["sku"] = {**(old.get("sku") or {}), **body["sku"]}
        if "tags" in body:
            merged["tags"] = body["tags"]
        return self.put(rid, merged)

    # --- Uniform scale sets: Azure makes and names the instances ------------------------
    def instances(self, vmss_id: str) -> list[dict[str, Any]]:
        prefix = vmss_id.lower() + "/virtualmachines/"
        return sorted((r for k, r in self.resources.items()
                       if k.startswith(prefix) and r["type"] == VMSS_VM),
                      key=lambda r: int(r["instanceId"]))

    def _free_address(self, subnet_id: str) -> str:
        import ipaddress

        vnet_id, _, name = subnet_id.rpartition("/subnets/")
        vnet = self.get(vnet_id)
        prefix = next(s["properties"]["addressPrefix"] for s in vnet["properties"]["subnets"]
                      if s["name"] == name)
        net = ipaddress.ip_network(prefix)
        used = {c.get("properties", {}).get("privateIPAddress")
                for r in self.resources.values() if r["type"] in NIC_TYPES
                for c in r["properties"].get("ipConfigurations") or []}
        for host in list(net.hosts())[3:]:  # .1 gateway, .2 .3 DNS: Azure's
            if str(host) not in used:
                return str(host)
        raise ArmError(409, "SubnetIsFull", f"subnet {name} has no free address")

    def _scale(self, vmss: dict[str, Any]) -> None:
        """Make or remove instances until there are sku.capacity of them."""
        import copy

        capacity = int((vmss.get("sku") or {}).get("capacity") or 0)
        while len(self.instances(vmss["id"])) > capacity:
            self.delete(self.instances(vmss["id"])[-1]["id"])
        while len(self.instances(vmss["id"])) < capacity:
            with self.lock:
                n = int(vmss["properties"].get("nextInstanceId", 0))
                vmss["properties"]["nextInstanceId"] = n + 1
                profile = copy.deepcopy(vmss["properties"]["virtualMachineProfile"])
                os_profile = profile["osProfile"]
                digits = "0123456789abcdefghijklmnopqrstuvwxyz"
                suffix, k = "", n
                for _ in range(6):
                    suffix, k = digits[k % 36] + suffix, k // 36
                os_profile["computerName"] = os_profile.pop("computerNamePrefix") + suffix
                conf = profile["networkProfile"]["networkInterfaceConfigurations"][0]
                subnet = conf["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"]
                rid = f"{vmss['id']}/virtualMachines/{n}"
                nic_id = f"{rid}/networkInterfaces/{conf['name']}"
                self.resources[nic_id.lower()] = {
                    "id": nic_id, "name": conf["name"], "type": VMSS_NIC, "tags": {},
                    "properties": {"virtualMachine": {"id": rid}, "ipConfigurations": [{
                        "name": "primary", "properties": {
                            "subnet": {"id": subnet}, "privateIPAllocationMethod": "Dynamic",
                            "privateIPAddress": self._free_address(subnet)}}]}}
                instance = {
                    "id": rid, "name": f"{vmss['name']}_{n}", "instanceId": str(n),
                    "type": VMSS_VM, "location": vmss.get("location", ""), "tags": {},
                    "sku": {"name": (vmss.get("sku") or {}).get("name")},
                    "properties": {"osProfile": os_profile,
                                   "storageProfile": profile["storageProfile"],
                                   "networkProfile": {"networkInterfaces": [{"id": nic_id}]},
                                   "vmId": str(uuid.uuid4()),
                                   "provisioningState": "Creating"}}
                if vmss.get("identity"):
                    instance["identity"] = vmss["identity"]
                self.resources[rid.lower()] = instance
                self.save()
            try:  # the scale set accepted the capacity; an instance may still fail
                self._allocate(instance)
                self.platform.create(instance, self.world())
                state = "Succeeded"
            except ArmError as exc:
                state = "Failed"
                instance["properties"]["error"] = {"code": exc.code, "message": exc.message}
            with self.lock:
                instance["properties"]["provisioningState"] = state
                self.save()

    def restart(self, rid: str) -> None:
        """A VM's reboot: its processes stop, its disk boots again."""
        vm = self.get(rid)
        restart = getattr(self.platform, "restart", None)
        if restart is not None:
            restart(vm, self.world())

    def delete_instances(self, vmss_id: str, ids: list[str]) -> None:
        vmss = self.get(vmss_id)
        for iid in ids:
            if self.delete(f"{vmss['id']}/virtualMachines/{iid}"):
                with self.lock:
                    sku = vmss.setdefault("sku", {})
                    sku["capacity"] = max(0, int(sku.get("capacity") or 0) - 1)
                    self.save()

    def _attach(self, r: dict[str, Any]) -> None:
        """A VM's NICs name their VM (Azure's back reference)."""
        if r["type"] != "Microsoft.Compute/virtualMachines":
            return
        for ref in (r["properties"].get("networkProfile") or {}).get("networkInterfaces") or []:
            nic = self.resources.get(ref.get("id", "").lower())
            if nic is not None:
                nic["properties"]["virtualMachine"] = {"id": r["id"]}

    def _fill(self, r: dict[str, Any]) -> None:
        """What Azure adds to a resource it creates."""
        p = r["properties"]
        if r["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities":
            p.setdefault("principalId", str(uuid.uuid4()))
            p.setdefault("clientId", str(uuid.uuid4()))
            p.setdefault("tenantId", "00000000-0000-0000-0000-00000000feed")
        if r["type"] == "Microsoft.Compute/virtualMachines":
            p.setdefault("vmId", str(uuid.uuid4()))
            p.setdefault("timeCreated", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if r["type"] == "Microsoft.Storage/storageAccounts":
            p.setdefault("primaryEndpoints",
                         {"blob": f"https://{r['name']}.blob.core.windows.net/"})

    def delete(self, rid: str) -> bool:
        with self.lock:
            r = self.resources.get(rid.lower())
            if r is None:
                return False
            r["properties"]["provisioningState"] = "Deleting"
        self.platform.delete(r)
        with self.lock:
            self.resources.pop(rid.lower(), None)
            if r["type"] == VMSS_VM:  # an instance's NIC is the scale set's, not a resource
                for k in [k for k in self.resources if k.startswith(rid.lower() + "/")]:
                    del self.resources[k]
            if r["type"] == VMSS:
                for inst in self.instances(r["id"]):
                    self.platform.delete(inst)
                    for k in [k for k in self.resources if k.startswith(inst["id"].lower())]:
                        del self.resources[k]
            # what goes with a VM (deleteOption: Delete): its NICs and OS disk
            if r["type"] == "Microsoft.Compute/virtualMachines":
                for nic in (r["properties"].get("networkProfile") or {}).get(
                        "networkInterfaces") or []:
                    if (nic.get("properties") or {}).get("deleteOption") == "Delete":
                        self.resources.pop(nic["id"].lower(), None)
            self.save()
        return True

    # --- deployments ---------------------------------------------------------------------
    def deployment(self, did: str) -> dict[str, Any]:
        d = self.deployments.get(did.lower())
        if d is None:
            raise ArmError(404, "DeploymentNotFound",
                           f"Deployment '{did.rsplit('/', 1)[1]}' could not be found.")
        return d

    def start_deployment(self, did: str, body: dict[str, Any],
                         wait: bool = False) -> dict[str, Any]:
        """Preflight (expressions, limits, rules) at once, then the deployment in the
        background, resources in waves of what their dependsOn allows."""
        gid = group_of(did)
        if gid not in self.groups:
            raise ArmError(404, "ResourceGroupNotFound",
                           f"Resource group '{did.split('/')[4]}' could not be found.")
        props = body.get("properties") or {}
        template = props.get("template") or {}
        parameters = props.get("parameters") or {}
        planned = self._preflight(did, template, parameters)
        d: dict[str, Any] = {"id": did, "name": did.rsplit("/", 1)[1],
             "type": "Microsoft.Resources/deployments",
             "tags": body.get("tags") or {},
             "properties": {"provisioningState": RUNNING, "mode": props.get("mode"),
                            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "outputResources": [], "operations": []}}
        with self.lock:
            self.deployments[did.lower()] = d
            self.save()
        ctx = self._context(did, template, parameters)
        runner = threading.Thread(target=self._deploy, args=(d, template, planned, ctx),
                                  daemon=True)
        runner.start()
        if wait:
            runner.join()
        return d

    def _context(self, did: str, template: dict[str, Any],
                 parameters: dict[str, Any]) -> Context:
        group = self.groups[group_of(did)]
        values: dict[str, Any] = {}
        for name, spec in (template.get("parameters") or {}).items():
            if name in parameters:
                values[name] = parameters[name].get("value")
            elif "defaultValue" in spec:
                values[name] = spec["defaultValue"]
            else:
                raise ArmError(400, "InvalidTemplate",
                               f"Deployment template validation failed: 'The value for the "
                               f"template parameter '{name}' is not provided.'")
        for name in parameters:
            if name not in (template.get("parameters") or {}):
                raise ArmError(400, "InvalidTemplate",
                               f"The template parameter '{name}' is not declared.")
        ctx = Context(did.split("/")[2], did.split("/")[4], group.get("location", ""),
                      values, dict(template.get("variables") or {}))
        ctx.location = values.get("location", ctx.location)
        return ctx

    def _preflight(self, did: str, template: dict[str, Any],
                   parameters: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(template resource, evaluated body) per resource; raises what Azure's validation
        would. reference() is not known before deployment: checked by dependsOn."""
        broken = limits.check(template)
        if broken:
            raise ArmError(400, "InvalidTemplate", broken[0],
                           [{"code": "InvalidTemplate", "message": b} for b in broken])
        ctx = self._context(did, template, parameters)
        pending: dict[str, Any] = {}

        def later(rid: str) -> dict[str, Any]:
            pending[rid] = True
            return _Lazy()

        ctx.reference = later
        ev = Evaluator(ctx)
        planned = []
        try:
            for res in template.get("resources") or []:
                body = {k: ev.value(v) for k, v in res.items() if k not in ("dependsOn",)}
                name = body["name"]
                rtype = body["type"]
                body["id"] = _id(ctx.group_id, rtype, name)
                body["dependsOn"] = [ev.value(x) for x in res.get("dependsOn") or []]
                planned.append((res, body))
        except ExpressionError as exc:
            raise ArmError(400, "InvalidTemplate", f"Deployment template validation failed: "
                           f"{exc}") from None
        self._check_dependencies(planned)
        world = self.world([_record_of(b) for _, b in planned])
        problems = []
        for _, body in planned:
            r = _record_of(body)
            for v in rules.check(r, world):
                text = v.message if v.message.startswith(r["name"]) else \
                    f"{r['name']}: {v.message}"
                problems.append({"code": v.code, "message": f"{text} ({v.rule})"})
        if problems:
            raise ArmError(400, "InvalidTemplateDeployment",
                           f"The template deployment failed: {problems[0]['message']}",
                           problems)
        return planned

    def _check_dependencies(self, planned: list[tuple[dict[str, Any], dict[str, Any]]]
                            ) -> None:
        ids = {b["id"].lower(): b for _, b in planned}
        for _, body in planned:
            for dep in body["dependsOn"]:
                if dep.lower() not in ids:
                    raise ArmError(400, "InvalidTemplate",
                                   f"The resource '{dep}' is not defined in the template "
                                   f"({DEPENDENCIES})")
        closure: dict[str, set[str]] = {}

        def deps(rid: str, seen: tuple[str, ...] = ()) -> set[str]:
            if rid in seen:
                raise ArmError(400, "InvalidTemplate", f"Circular dependency: {rid}")
            if rid not in closure:
                direct = {d.lower() for d in ids[rid]["dependsOn"]}
                closure[rid] = set(direct)
                for d in direct:
                    closure[rid] |= deps(d, (*seen, rid))
            return closure[rid]

        for _, body in planned:
            rid = body["id"].lower()
            text = json.dumps(body.get("properties") or {}).lower()
            for other in ids:
                if other != rid and f'"{other}"' in text and other not in deps(rid) \
                        and not rid.startswith(other + "/"):
                    raise ArmError(400, "InvalidTemplate",
                                   f"{body['name']} refers to {ids[other]['name']} without "
                                   "depending on it: Resource Manager may create them in "
                                   f"parallel ({DEPENDENCIES})")

    def _deploy(self, d: dict[str, Any], template: dict[str, Any],
                planned: list[tuple[dict[str, Any], dict[str, Any]]], ctx: Context) -> None:
        done: set[str] = set()
        failed = False

        def reference(rid: str) -> dict[str, Any]:
            if rid.lower() not in self.resources:
                raise ExpressionError(f"reference(): '{rid}' is not deployed yet")
            return dict(self.resources[rid.lower()]["properties"])

        ctx.reference = reference
        remaining = list(planned)
        while remaining and not failed:
            wave = [p for p in remaining if all(x.lower() in done for x in p[1]["dependsOn"])]
            remaining = [p for p in remaining if p not in wave]
            threads = [threading.Thread(target=self._one, args=(d, res, ctx, template, done))
                       for res, _ in wave]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            failed = any(op["properties"]["provisioningState"] == "Failed"
                         for op in d["properties"]["operations"])
        outputs: dict[str, Any] = {}
        if not failed:
            ev = Evaluator(ctx)
            try:
                for name, spec in (template.get("outputs") or {}).items():
                    outputs[name] = {"type": spec.get("type"), "value": ev.value(spec["value"])}
            except ExpressionError as exc:
                failed = True
                d["properties"]["error"] = {"code": "InvalidTemplate", "message": str(exc)}
        with self.lock:
            d["properties"]["outputs"] = outputs
            d["properties"]["provisioningState"] = "Failed" if failed else "Succeeded"
            if failed and "error" not in d["properties"]:
                d["properties"]["error"] = {
                    "code": "DeploymentFailed",
                    "message": "At least one resource deployment operation failed."}
            self.save()

    def _one(self, d: dict[str, Any], res: dict[str, Any], ctx: Context,
             template: dict[str, Any], done: set[str]) -> None:
        op: dict[str, Any] = {"operationId": uuid.uuid4().hex[:16].upper(), "properties": {
            "provisioningState": RUNNING, "provisioningOperation": "Create"}}
        with self.lock:
            d["properties"]["operations"].append(op)
        try:
            ev = Evaluator(Context(ctx.subscription, ctx.resource_group, ctx.location,
                                   ctx.parameters, ctx.variables, ctx.reference))
            body = {k: ev.value(v) for k, v in res.items() if k != "dependsOn"}
            rid = _id(ctx.group_id, body["type"], body["name"])
            op["properties"]["targetResource"] = {"id": rid, "resourceType": body["type"],
                                                  "resourceName": body["name"]}
            self.put(rid, body)
            op["properties"]["provisioningState"] = "Succeeded"
            with self.lock:
                done.add(rid.lower())
                d["properties"]["outputResources"].append({"id": rid})
        except (ArmError, ExpressionError) as exc:
            code = exc.code if isinstance(exc, ArmError) else "InvalidTemplate"
            message = exc.message if isinstance(exc, ArmError) else str(exc)
            op["properties"]["provisioningState"] = "Failed"
            op["properties"]["statusMessage"] = {"error": {"code": code, "message": message}}
        with self.lock:
            self.save()

    def delete_deployment(self, did: str) -> None:
        with self.lock:
            self.deployments.pop(did.lower(), None)
            self.save()


class _Lazy(dict[str, Any]):
    """reference() before deployment: any property, unknown value."""

    def __missing__(self, key: str) -> Any:
        return f"<reference:{key}>"

    def __contains__(self, key: object) -> bool:
        return True


def _id(group_id: str, rtype: str, name: str) -> str:
    parts = rtype.split("/")
    names = name.split("/")
    return f"{group_id}/providers/{parts[0]}" + "".join(
        f"/{t}/{n}" for t, n in zip(parts[1:], names, strict=False))


def _record_of(body: dict[str, Any]) -> dict[str, Any]:
    return {"id": body["id"], "name": body["id"].rsplit("/", 1)[1], "type": body["type"],
            "location": body.get("location", ""), "tags": body.get("tags") or {},
            "properties": body.get("properties") or {}, "sku": body.get("sku") or {}}

