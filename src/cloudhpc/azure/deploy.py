"""Deploy and remove a cluster on Azure through the Azure SDK (azure-identity's
DefaultAzureCredential, azure-mgmt-resource): the exported ARM template as one deployment,
progress from its operations, and failed operations shown plainly. `destroy` removes exactly
what the deployment created (the whole resource group only when cloudhpc created it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloudhpc.azure.arm import API_VERSIONS, export
from cloudhpc.azure.errors import AzureError, from_http
from cloudhpc.template.schema import Template

Progress = Callable[[int, int, str], None]  # done, total, what
CREATED_TAG = "cloudhpc-created"


def _noop(done: int, total: int, what: str) -> None:
    pass


def dry_run(t: Template) -> list[dict[str, str]]:
    """What a deployment would create, without calling Azure."""
    arm, _ = export(t)
    return [{"type": r["type"], "name": r["name"]} for r in arm["resources"]]


class AzureDeployment:
    def __init__(self, subscription: str, resource_group: str, credential: Any = None,
                 poll_seconds: float = 5.0, **client_kwargs: Any) -> None:
        from azure.mgmt.resource import ResourceManagementClient

        if credential is None:
            from azure.identity import DefaultAzureCredential
            credential = DefaultAzureCredential()
        self.rg = resource_group
        self.poll_seconds = poll_seconds
        self.client = ResourceManagementClient(credential, subscription, **client_kwargs)

    def _call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import HttpResponseError

        try:
            return fn(*args, **kwargs)
        except HttpResponseError as exc:
            raise from_http(exc, doing) from None

    def deploy(self, t: Template, secrets: dict[str, str],
               progress: Progress = _noop) -> dict[str, Any]:
        """Create the resource group if needed, run the deployment, return its outputs."""
        arm, params = export(t)
        name = f"cloudhpc-{t.name}"
        exists = self._call("checking the resource group",
                            self.client.resource_groups.check_existence, self.rg)
        if not exists:
            self._call("creating the resource group", self.client.resource_groups.
                       create_or_update, self.rg,
                       {"location": t.azure.region,
                        "tags": {CREATED_TAG: "true", "cloudhpc-cluster": t.name}})
        values = {k: v["value"] for k, v in params["parameters"].items()}
        values.update(secrets)
        body = {"properties": {"mode": "Incremental", "template": arm,
                               "parameters": {k: {"value": v} for k, v in values.items()}},
                "tags": {"cloudhpc-cluster": t.name}}
        poller = self._call("starting the deployment",
                            self.client.deployments.begin_create_or_update, self.rg, name,
                            body)
        total = len(arm["resources"])
        while not poller.done():
            done = self._finished_operations(name)
            progress(done, total, "deploying")
            poller.wait(self.poll_seconds)
        try:
            result = self._call("deploying", poller.result)
        except AzureError as exc:
            raise self._failed(name, exc.message, exc.code, exc.hint) from None
        state = getattr(result.properties, "provisioning_state", "")
        if state in ("Failed", "Canceled"):
            error = getattr(result.properties, "error", None)
            raise self._failed(name, getattr(error, "message", None) or state,
                               getattr(error, "code", None) or "", "")
        progress(total, total, "deployed")
        outputs = getattr(result.properties, "outputs", None) or {}
        return {k: v.get("value") for k, v in outputs.items()}

    def _failed(self, name: str, message: str, code: str, hint: str) -> AzureError:
        """The deployment's own error, led by the first failed operation's (the cause)."""
        failures = self.failures(name)
        return AzureError(f"the deployment failed: {failures[0] if failures else message}",
                          code, "; ".join(failures[1:3]) or hint or
                          "see the deployment in the Azure portal for every operation")

    def _finished_operations(self, name: str) -> int:
        ops = self._call("reading the deployment's progress",
                         self.client.deployment_operations.list, self.rg, name)
        return sum(1 for op in ops
                   if getattr(op.properties, "provisioning_state", "") == "Succeeded")

    def failures(self, name: str) -> list[str]:
        """Each failed operation of a deployment: resource, Azure's code and message."""
        out = []
        for op in self._call("reading the deployment's errors",
                             self.client.deployment_operations.list, self.rg, name):
            props = op.properties
            if getattr(props, "provisioning_state", "") != "Failed":
                continue
            target = getattr(props, "target_resource", None)
            what = (f"{target.resource_type} {target.resource_name}" if target
                    else "deployment")
            status = getattr(props, "status_message", None)
            if isinstance(status, dict):
                error = status.get("error", status)
                code, message = error.get("code", ""), error.get("message", "")
            else:
                error = getattr(status, "error", None) or status
                code = getattr(error, "code", "") or ""
                message = getattr(error, "message", "") or str(status or "")
            out.append(f"{what}: {code}: {message}".strip())
        return out

    def destroy(self, t: Template) -> list[str]:
        """Remove what the deployment created; returns the resource ids removed."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        name = f"cloudhpc-{t.name}"
        try:
            group = self.client.resource_groups.get(self.rg)
        except ResourceNotFoundError:
            return []  # nothing left: down is idempotent
        tags = group.tags or {}
        if tags.get(CREATED_TAG) == "true" and tags.get("cloudhpc-cluster") == t.name:
            self._call("deleting the resource group",
                       self.client.resource_groups.begin_delete, self.rg).result()
            return [group.id]
        try:
            deployment = self.client.deployments.get(self.rg, name)
        except ResourceNotFoundError:
            return []
        ids = [r.id for r in (deployment.properties.output_resources or [])]
        # first the VMs the control plane launched (their NIC and disk go with them), which
        # the deployment does not list and which would keep the scale set and VNet in use
        query = f"tagName eq 'cloudhpc-cluster' and tagValue eq '{t.name}'"
        tagged = self._call("listing the cluster's VMs", lambda: list(
            self.client.resources.list_by_resource_group(self.rg, filter=query)))
        launched = [r.id for r in tagged if r.id not in ids
                    and r.type.lower() == "microsoft.compute/virtualmachines"]
        versions = {k.lower(): v for k, v in API_VERSIONS.items()}
        for rid in launched + ids[::-1]:  # dependents were created last
            rtype = "/".join(rid.split("/providers/", 1)[1].split("/")[0:2]).lower()
            try:
                self.client.resources.begin_delete_by_id(
                    rid, versions.get(rtype, "2023-09-01")).result()
            except ResourceNotFoundError:
                continue  # gone already: down is idempotent
            except HttpResponseError as exc:
                raise from_http(exc, f"deleting {rid}") from None
        self._call("deleting the deployment record", self.client.deployments.begin_delete,
                   self.rg, name).result()
        return launched + ids

