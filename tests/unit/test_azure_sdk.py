"""The Azure SDK calls, through azure-core's pluggable HTTP transport: the requests cloudhpc
sends (deployment body, scale-set VM create/delete) and how it handles recorded error
responses (quota, SkuNotAvailable, throttling 429 with retry). Nothing leaves this process."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse

from cloudhpc.azure.arm import export
from cloudhpc.azure.deploy import AzureDeployment, dry_run
from cloudhpc.azure.errors import AzureError
from cloudhpc.azure.provider import AzureProvider
from cloudhpc.plan import make_plan
from cloudhpc.template.loader import load

ROOT = Path(__file__).resolve().parents[2]
SUB = "00000000-0000-0000-0000-000000000001"
Reply = tuple[int, Any, dict[str, str]]


class Credential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", 4_102_444_800)


class _Raw:
    def __init__(self, status: int, body: Any, headers: dict[str, str]) -> None:
        self.status, self.reason = status, "test"
        self._body = b"" if body is None else json.dumps(body).encode()
        self._headers = {"Content-Type": "application/json", **headers}

    def getheaders(self) -> list[tuple[str, str]]:
        return list(self._headers.items())

    def read(self) -> bytes:
        return self._body


class _Response(RestHttpClientTransportResponse):  # type: ignore[misc]
    """A complete, already-read response (the SDK streams some bodies)."""

    def iter_bytes(self, **kwargs: Any) -> Any:
        yield self.read()

    def iter_raw(self, **kwargs: Any) -> Any:
        yield self.read()

    def stream_download(self, pipeline: Any, **kwargs: Any) -> Any:
        yield self.read()

    _stream_download = stream_download


class Recorder(HttpTransport):  # type: ignore[misc]
    """Answers from a function of (method, url, body) and records every request."""

    def __init__(self, answer: Callable[[str, str, Any], Reply]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str, Any]] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url, body))
        status, payload, headers = self.answer(request.method, request.url, body)
        response = _Response(
            request=request, internal_response=_Raw(status, payload, headers))
        response.read()
        return response

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *args: Any) -> None:
        pass


@pytest.fixture()
def template() -> Any:
    model, _ = load(ROOT / "examples" / "azure-hb.yaml")
    return model


def deployment(answer: Callable[[str, str, Any], Reply]) -> tuple[AzureDeployment, Recorder]:
    rec = Recorder(answer)
    return AzureDeployment(SUB, "rg-hpc", credential=Credential(), poll_seconds=0,
                           transport=rec, retry_backoff_factor=0), rec


def test_dry_run_lists_what_would_be_created(template: Any) -> None:
    planned = dry_run(template)
    assert {"type": "Microsoft.Compute/virtualMachineScaleSets", "name": "hbdemo-hb-vmss"} \
        in planned
    assert len(planned) == len(export(template)[0]["resources"])


def test_deploy_sends_the_exported_template_and_secrets_as_parameters(template: Any) -> None:
    def answer(method: str, url: str, body: Any) -> Reply:
        if method == "HEAD":
            return 404, None, {}
        if "/deployments/" in url and "/operations" in url:
            return 200, {"value": []}, {}
        if method == "PUT" and "/deployments/" in url:
            return 200, {"id": "d", "name": "cloudhpc-hbdemo", "properties": {
                "provisioningState": "Succeeded",
                "outputs": {"headPrivateIp": {"type": "String", "value": "10.42.0.4"}}}}, {}
        if method == "PUT":
            return 201, {"id": "g", "name": "rg-hpc", "location": "eastus"}, {}
        raise AssertionError(f"unexpected {method} {url}")

    dep, rec = deployment(answer)
    outputs = dep.deploy(template, {"sshPublicKey": "ssh-ed25519 AAAA k", "mungeKey": "bWs=",
                                    "clusterToken": "s3cr3t-t0ken"})
    assert outputs == {"headPrivateIp": "10.42.0.4"}
    methods = [(m, re.sub(r"\?.*", "", u).split(SUB)[1]) for m, u, _ in rec.requests]
    assert methods[0] == ("HEAD", "/resourcegroups/rg-hpc")
    assert methods[1] == ("PUT", "/resourcegroups/rg-hpc")
    group = rec.requests[1][2]
    assert group["location"] == "eastus" and group["tags"]["cloudhpc-created"] == "true"
    put = next(b for m, u, b in rec.requests if m == "PUT" and "/deployments/" in u)
    assert put["properties"]["template"] == export(template)[0]
    assert put["properties"]["parameters"]["mungeKey"] == {"value": "bWs="}
    assert put["properties"]["parameters"]["location"] == {"value": "eastus"}
    assert put["properties"]["parameters"]["clusterToken"] == {"value": "s3cr3t-t0ken"}
    assert "s3cr3t-t0ken" not in json.dumps(put["properties"]["template"])
    assert all(u.startswith("https://management.azure.com/") for _, u, _ in rec.requests)


def test_failed_deployment_shows_the_operation_errors(template: Any) -> None:
    def answer(method: str, url: str, body: Any) -> Reply:
        if method == "HEAD":
            return 204, None, {}
        if "/operations" in url:
            return 200, {"value": [{"id": "op1", "operationId": "1", "properties": {
                "provisioningState": "Failed",
                "targetResource": {"resourceType": "Microsoft.Compute/virtualMachineScaleSets",
                                   "resourceName": "hbdemo-hb-vmss"},
                "statusMessage": {"error": {
                    "code": "SkuNotAvailable",
                    "message": "The requested size for resource 'hbdemo-hb-vmss' is "
                               "currently not available in location 'eastus'."}}}}]}, {}
        return 200, {"id": "d", "name": "cloudhpc-hbdemo", "properties": {
            "provisioningState": "Failed",
            "error": {"code": "DeploymentFailed", "message": "At least one resource "
                      "deployment operation failed."}}}, {}

    dep, _ = deployment(answer)
    with pytest.raises(AzureError) as info:
        dep.deploy(template, {"sshPublicKey": "k", "mungeKey": "m", "clusterToken": "t"})
    assert "Microsoft.Compute/virtualMachineScaleSets hbdemo-hb-vmss: SkuNotAvailable" in \
        info.value.message
    assert "\n" not in info.value.message


def test_destroy_deletes_the_group_only_when_cloudhpc_created_it(template: Any) -> None:
    def answer(method: str, url: str, body: Any) -> Reply:
        if method == "GET" and url.split("?")[0].endswith("/resourcegroups/rg-hpc"):
            return 200, {"id": f"/subscriptions/{SUB}/resourceGroups/rg-hpc",
                         "name": "rg-hpc", "location": "eastus",
                         "tags": {"cloudhpc-created": "true", "cloudhpc-cluster": "hbdemo"}}, {}
        if method == "DELETE":
            return 200, None, {}
        raise AssertionError(f"unexpected {method} {url}")

    dep, rec = deployment(answer)
    assert dep.destroy(template) == [f"/subscriptions/{SUB}/resourceGroups/rg-hpc"]
    assert [m for m, _, _ in rec.requests] == ["GET", "DELETE"]


def provider(template: Any, answer: Callable[[str, str, Any], Reply]
             ) -> tuple[AzureProvider, Recorder]:
    rec = Recorder(answer)
    return AzureProvider(template, make_plan(template), SUB, "rg-hpc", credential=Credential(),
                         secrets={"mungeKey": "TVVOR0U=", "clusterToken": "tok",
                                  "sshPublicKey": "ssh-ed25519 AAAAkey admin"},
                         transport=rec, retry_backoff_factor=0, polling_interval=0), rec


def test_launch_creates_vms_in_the_scale_set_and_reports_quota(template: Any) -> None:
    def answer(method: str, url: str, body: Any) -> Reply:
        if "/virtualMachines/hbdemo-serial-2" in url:
            return 409, {"error": {"code": "QuotaExceeded", "message": "Operation could not be "
                                   "completed as it results in exceeding approved "
                                   "standardHBrsv3Family Cores quota."}}, {}
        return 200, {"id": url.split("?")[0], "name": url.split("/")[-1].split("?")[0],
                     "location": "eastus", "properties": {"provisioningState": "Succeeded"}}, {}

    prov, rec = provider(template, answer)
    plan = make_plan(template)
    errors = prov.launch([plan.node("serial-2"), plan.node("serial-3")])  # type: ignore[list-item]
    assert [(e.nodeset, e.nodes) for e in errors] == [("serial", ["serial-2"])]
    assert "QuotaExceeded" in errors[0].cause and "\n" not in errors[0].cause
    assert prov.errors() == errors
    body = next(b for m, u, b in rec.requests if "/virtualMachines/hbdemo-serial-3" in u)
    assert body["properties"]["virtualMachineScaleSet"]["id"].endswith(
        "/virtualMachineScaleSets/hbdemo-serial-vmss")
    assert body["properties"]["hardwareProfile"]["vmSize"] == "Standard_D4s_v5"
    assert body["properties"]["osProfile"]["computerName"] == "serial-3"
    assert body["tags"]["cloudhpc-node"] == "serial-3"
    assert "proximityPlacementGroup" not in body["properties"]
    # its NIC was created first, at the address slurm.conf and /etc/hosts give serial-3
    nic_url, nic = next((u, b) for m, u, b in rec.requests
                        if m == "PUT" and "/networkInterfaces/hbdemo-serial-3-nic" in u)
    assert "api-version=2023-09-01" in nic_url
    ipconf = nic["properties"]["ipConfigurations"][0]["properties"]
    assert (ipconf["privateIPAllocationMethod"], ipconf["privateIPAddress"]) == (
        "Static", plan.node("serial-3").address)  # type: ignore[union-attr]
    ref = body["properties"]["networkProfile"]["networkInterfaces"][0]
    assert ref["id"].endswith("/networkInterfaces/hbdemo-serial-3-nic")
    assert ref["properties"]["deleteOption"] == "Delete"
    # the same bootstrap as the deployment's nodes, with the munge key filled in (the
    # control token is the head's alone)
    text = base64.b64decode(body["properties"]["osProfile"]["customData"]).decode()
    assert text.startswith("#cloud-config") and "TVVOR0U=" in text and "tok" not in text
    assert "@@" not in text
    config = json.loads(yaml.safe_load(text)["write_files"][0]["content"])
    assert (config["role"], config["nodeset"]) == ("compute", "serial")


def test_losing_azure_while_a_vm_is_made_is_reported_as_its_failure(template: Any) -> None:
    """CI (the rehearsal's endpoint stopped while a VM was still being made): the watcher
    of the creation died of a ServiceRequestError in its thread, and the node's end was
    never reported: Slurm would have waited ResumeTimeout (30 min on Azure)."""
    from azure.core.exceptions import ServiceRequestError

    operation = "https://management.azure.com/subscriptions/x/operations/op-1?api-version=1"

    def answer(method: str, url: str, body: Any) -> Reply:
        if url.startswith(operation.split("?")[0]):
            raise ServiceRequestError("Failed to establish a new connection: [Errno 111] "
                                      "Connection refused")
        if "/virtualMachines/" in url:
            return 201, {"id": url.split("?")[0], "name": "hbdemo-serial-2",
                         "properties": {"provisioningState": "Creating"}}, {
                "Azure-AsyncOperation": operation}
        return 200, {"id": url.split("?")[0], "name": url.split("/")[-1].split("?")[0],
                     "location": "eastus", "properties": {"provisioningState": "Succeeded"}}, {}

    prov, _ = provider(template, answer)
    late: list[Any] = []
    arrived = threading.Event()
    prov.on_failure(lambda error: (late.append(error), arrived.set()))
    assert prov.launch([make_plan(template).node("serial-2")]) == []  # type: ignore[list-item]
    assert arrived.wait(30), "the lost creation was never reported"
    assert late[0].nodes == ["serial-2"] and "\n" not in late[0].cause
    assert late[0].cause.startswith("creating serial-2: lost contact with Azure while it was "
                                    "made (ServiceRequestError: Failed to establish")


def test_throttling_is_retried(template: Any) -> None:
    seen: list[str] = []

    def answer(method: str, url: str, body: Any) -> Reply:
        seen.append(method)
        if len(seen) == 1:
            return 429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, {
                "Retry-After": "0"}
        return 200, {"id": "vm", "name": "serial-2", "location": "eastus",
                     "properties": {"provisioningState": "Succeeded"}}, {}

    prov, rec = provider(template, answer)
    assert prov.launch([make_plan(template).node("serial-2")]) == []  # type: ignore[list-item]
    # the NIC's PUT throttled once and retried, then the VM's
    assert [(m, "networkInterfaces" in u) for m, u, _ in rec.requests] == [
        ("PUT", True), ("PUT", True), ("PUT", False)]


def test_sku_not_available_is_a_capacity_error(template: Any) -> None:
    def answer(method: str, url: str, body: Any) -> Reply:
        return 409, {"error": {"code": "SkuNotAvailable", "message": "The requested VM size "
                               "Standard_D4s_v5 is not available in eastus."}}, {}

    prov, _ = provider(template, answer)
    errors = prov.launch([make_plan(template).node("serial-3")])  # type: ignore[list-item]
    assert "SkuNotAvailable" in errors[0].cause


def test_nodes_and_terminate(template: Any) -> None:
    vm = {"id": f"/subscriptions/{SUB}/x/hb-1", "name": "serial-2", "location": "eastus",
          "tags": {"cloudhpc-cluster": "hbdemo", "cloudhpc-node": "serial-2"},
          "properties": {"provisioningState": "Succeeded"}}

    def answer(method: str, url: str, body: Any) -> Reply:
        if method == "GET":
            return 200, {"value": [vm]}, {}
        if method == "DELETE" and "/hbdemo-serial-3" in url:
            return 404, {"error": {"code": "NotFound", "message": "gone"}}, {}
        return 200, None, {}

    prov, rec = provider(template, answer)
    nodes = prov.nodes()
    assert nodes["serial-2"].state.value == "running" and nodes["serial-3"].state.value == "absent"
    prov.terminate(["serial-2", "serial-3"])  # an absent node is no error: idempotent
    deletes = [u.split("?")[0].rsplit("/", 1)[1] for m, u, _ in rec.requests if m == "DELETE"]
    assert deletes == ["hbdemo-serial-2", "hbdemo-serial-3"]  # the cluster in the name


def test_up_and_down_record_the_cluster_and_keep_secrets_private(
        template: Any, tmp_path: Path) -> None:
    from cloudhpc.azure import service
    from cloudhpc.state import Store

    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@host\n")
    deployed: list[Any] = []

    def answer(method: str, url: str, body: Any) -> Reply:
        path = url.split("?")[0]
        if method == "HEAD":
            return 204, None, {}
        if "/operations" in path:
            return 200, {"value": []}, {}
        if method == "PUT":
            deployed.append(body)
            return 200, {"id": "d", "name": "n", "properties": {
                "provisioningState": "Succeeded", "outputs": {}}}, {}
        if method == "GET" and path.endswith("/resourcegroups/rg-x"):
            return 200, {"id": "/g", "name": "rg-x", "location": "eastus", "tags": {}}, {}
        if method == "GET" and path.endswith("/resourceGroups/rg-x/resources"):
            # what the control plane launched (tagged), and the head the deployment made
            assert "tagValue eq 'hbdemo'" in url.replace("%20", " ").replace("%27", "'")
            vm = f"/subscriptions/{SUB}/resourceGroups/rg-x/providers/Microsoft.Compute/"
            return 200, {"value": [
                {"id": vm + "virtualMachines/hb-3", "name": "hb-3",
                 "type": "Microsoft.Compute/virtualMachines"},
                {"id": vm + "virtualMachines/hbdemo-head", "name": "hbdemo-head",
                 "type": "Microsoft.Compute/virtualMachines"}]}, {}
        if method == "GET" and "/deployments/" in path:
            return 200, {"id": "d", "name": "n", "properties": {"outputResources": [
                {"id": f"/subscriptions/{SUB}/resourceGroups/rg-x/providers/"
                       "Microsoft.Network/virtualNetworks/hbdemo-vnet"},
                {"id": f"/subscriptions/{SUB}/resourceGroups/rg-x/providers/"
                       "Microsoft.Compute/virtualMachines/hbdemo-head"}]}}, {}
        if method == "DELETE":
            return 204, None, {}
        raise AssertionError(f"unexpected {method} {url}")

    store = Store(tmp_path / "state.db")
    target = service.target(template, SUB, "rg-x")
    rec = Recorder(answer)
    service.up(target, store, str(key), credential=Credential(), transport=rec,
               retry_backoff_factor=0, poll_seconds=0, image_id="/subscriptions/x/images/n")
    record = store.cluster("hbdemo")
    assert record is not None and record.provider == "azure" and record.status == "running"
    params = deployed[0]["properties"]["parameters"]
    assert params["sshPublicKey"]["value"].startswith("ssh-ed25519 ")
    assert len(base64.b64decode(params["mungeKey"]["value"])) == 1024
    secret_file = tmp_path / "clusters" / "hbdemo" / "etc" / "azure-mungeKey"
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    removed = service.down(record, store, credential=Credential(), transport=rec,
                           retry_backoff_factor=0, poll_seconds=0)
    # the VM the control plane launched, then exactly what the deployment made, dependents
    # first; the group itself is not ours
    assert [r.rsplit("/", 1)[1] for r in removed] == ["hb-3", "hbdemo-vnet", "hbdemo-head"]
    deletes = [u.split("?")[0].rsplit("/", 1)[1] for m, u, _ in rec.requests if m == "DELETE"]
    assert deletes == ["hb-3", "hbdemo-head", "hbdemo-vnet", "cloudhpc-hbdemo"]
    assert store.cluster("hbdemo") is None and not secret_file.exists()


def test_power_saving_entry_point_drives_the_azure_provider(template: Any,
                                                            tmp_path: Path) -> None:
    """Slurm's ResumeProgram asks the control plane, which on Azure asks the Azure provider:
    one node is created, one refused by quota; the refusal is reported as the node's
    failure (so that the node set backs off), with Azure's message."""
    from cloudhpc.autoscale.control import Controller
    from cloudhpc.events import EventLog
    from cloudhpc.paths import ClusterDir

    def answer(method: str, url: str, body: Any) -> Reply:
        if "/virtualMachines/hbdemo-serial-2" in url:
            return 409, {"error": {"code": "QuotaExceeded", "message": "exceeds the "
                                   "approved standardHBrsv3Family Cores quota"}}, {}
        return 200, {"id": "vm", "name": "serial-3", "location": "eastus",
                     "properties": {"provisioningState": "Succeeded"}}, {}

    prov, rec = provider(template, answer)
    cdir = ClusterDir(tmp_path / "c")
    cdir.root.mkdir()
    result = Controller(make_plan(template), prov, {}, EventLog(cdir.events)).launch(
        ["serial-2", "serial-3"])
    assert result["launched"] == ["serial-3"]
    assert [(f["node"], "QuotaExceeded" in f["cause"]) for f in result["failed"]] == [
        ("serial-2", True)]
    kinds = [json.loads(line)["kind"] for line in
             (cdir.root / "events.jsonl").read_text().splitlines()]
    assert kinds == ["node_failed", "node_launched"]
    assert {u.split("?")[0].rsplit("/", 1)[1] for m, u, _ in rec.requests if m == "PUT"} == {
        "hbdemo-serial-2", "hbdemo-serial-3", "hbdemo-serial-2-nic", "hbdemo-serial-3-nic"}


def test_local_commands_on_an_azure_cluster_say_where_to_go(template: Any,
                                                          tmp_path: Path) -> None:
    from cloudhpc.cluster import Cluster
    from cloudhpc.errors import CloudHPCError
    from cloudhpc.state import Store

    store = Store(tmp_path / "state.db")
    store.put_cluster("hbdemo", "azure", "running", template.model_dump(mode="json"),
                      template.network.cidr)
    cluster = Cluster.get("hbdemo", store)
    for call in (cluster.status, lambda: cluster.exec("head", ["true"])):
        with pytest.raises(CloudHPCError, match="runs on azure") as info:
            call()
        assert "--remote" in info.value.hint


def test_launched_vms_have_the_deployments_vm_body(template: Any) -> None:
    """Both paths that make a compute VM (the ARM template's static nodes, the control
    plane's SDK launches) use one body: launched VMs had no SSH key (Azure refuses a Linux
    profile without key or password) and no disk settings."""
    from cloudhpc.azure.arm import export

    prov, _ = provider(template, lambda m, u, b: (200, {}, {}))
    plan = make_plan(template)
    arm_template, _ = export(template)
    static_vm = next(r for r in arm_template["resources"]
                     if r["type"] == "Microsoft.Compute/virtualMachines"
                     and r["name"] != f"{template.name}-head")
    static = static_vm["properties"]
    same_set = [n for n in plan.compute()
                if n.nodeset == static_vm["tags"]["cloudhpc-nodeset"]]
    launched = prov._vm_body(same_set[-1])["properties"]

    def shape(body: Any) -> Any:  # keys, recursively: the values differ by design
        if isinstance(body, dict):
            return {k: shape(v) for k, v in body.items()}
        if isinstance(body, list):
            return [shape(v) for v in body]
        return type(body).__name__

    assert shape(launched) == shape(static)
    ssh = launched["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]
    assert ssh == {"path": f"/home/{template.azure.admin_user}/.ssh/authorized_keys",
                   "keyData": "ssh-ed25519 AAAAkey admin"}
    assert launched["storageProfile"]["osDisk"]["managedDisk"] == {
        "storageAccountType": "Premium_LRS"}
    # the deployment's key path follows the admin user parameter (Azure refuses another)
    assert "parameters('adminUsername')" in \
        static["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["path"]


def test_a_contributor_is_told_why_the_role_assignment_fails() -> None:
    """Finding 5: the deployment creates a role assignment, which Contributor cannot."""
    from cloudhpc.azure.errors import from_http

    class Err:
        code = "AuthorizationFailed"
        message = ("The client 'u' does not have authorization to perform action "
                   "'Microsoft.Authorization/roleAssignments/write' over scope '/x'")

    class Exc:
        error = Err()

    err = from_http(Exc(), "deploying hbdemo")
    assert "roleAssignments/write" in err.message and "Contributor role cannot" in err.hint
