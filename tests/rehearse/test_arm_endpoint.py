"""The exported template deployed with the real Azure SDK against the rehearsal's Resource
Manager: expressions evaluated, resources created in dependency order, Azure's documented
rules enforced (each finding of issue 14 that a deployment would meet is a refusal here)."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cloudhpc.azure.arm import export
from cloudhpc.azure.deploy import AzureDeployment
from cloudhpc.azure.errors import AzureError
from cloudhpc.azure.provider import AzureProvider
from cloudhpc.plan import make_plan
from cloudhpc.rehearse.engine import ArmError
from cloudhpc.template.loader import load
from tests.rehearse.conftest import SUB, Arm, Credential

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtest rehearsal",
           "mungeKey": "A" * 1368, "clusterToken": "t" * 43,
           "imageId": f"/subscriptions/{SUB}/resourceGroups/rg-rh/providers/Microsoft.Compute/"
                      "images/cloudhpc-test"}


def small(rdma: bool = False, nat: bool = False) -> Any:
    data = {"version": 1, "name": "rh", "provider": "azure",
            "network": {"cidr": "10.40.0.0/24"},
            "compute": [{"name": "cn", "size": "Standard_D4s_v5", "min": 1, "max": 3}],
            "azure": {"region": "eastus", "ssh_cidrs": ["203.0.113.0/24"],
                      "subscription": SUB, "resource_group": "rg-rh", "nat_gateway": nat}}
    if rdma:
        data["compute"].append({"name": "hb", "size": "Standard_HB120rs_v3", "rdma": True,
                                "min": 0, "max": 2})
    model, _ = load(data)
    return model


def deploy(arm: Arm, t: Any) -> dict[str, Any]:
    d = AzureDeployment(SUB, "rg-rh", credential=Credential(), poll_seconds=0.05,
                        **arm.kwargs())
    return d.deploy(t, SECRETS)


def test_the_exported_template_deploys_and_its_outputs_are_evaluated(arm: Arm) -> None:
    t = small()
    outputs = deploy(arm, t)
    plan = make_plan(t.model_copy(update={"provider": "azure"}))
    assert outputs["headPrivateIp"] == plan.head.address
    account = outputs["storageAccount"]
    assert account.startswith("chpc") and len(account) == 17
    types = sorted({r["type"] for r in arm.engine.resources.values()})
    assert "Microsoft.Compute/virtualMachines" in types
    vms = {r["name"] for r in arm.engine.in_group(f"/subscriptions/{SUB}/resourceGroups/rg-rh",
                                                  "Microsoft.Compute/virtualMachines")}
    assert vms == {"rh-head", "rh-cn-1"}
    identity = next(r for r in arm.engine.resources.values()
                    if r["type"] == "Microsoft.Authorization/roleAssignments")
    principal = next(r for r in arm.engine.resources.values()
                     if r["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities")
    # reference(identity).principalId evaluated after the identity was created
    assert identity["properties"]["principalId"] == principal["properties"]["principalId"]


def test_the_control_planes_sdk_calls_launch_list_and_delete_vms(arm: Arm) -> None:
    t = small()
    deploy(arm, t)
    plan = make_plan(t.model_copy(update={"provider": "azure"}))
    provider = AzureProvider(t, plan, SUB, "rg-rh", credential=Credential(),
                             secrets=SECRETS, **arm.kwargs())
    assert provider.launch([plan.node("cn-2")]) == []  # type: ignore[list-item]
    deadline = time.monotonic() + 30  # accepted at once, provisioned a moment later
    while provider.nodes()["cn-2"].state.value != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    nodes = provider.nodes()
    assert nodes["cn-2"].state.value == "running" and nodes["cn-3"].state.value == "absent"
    provider.terminate(["cn-2"])
    assert provider.nodes()["cn-2"].state.value == "absent"
    # the NIC went with its VM (deleteOption: Delete)
    assert not [r for r in arm.engine.resources.values() if r["name"] == "rh-cn-2-nic"]


def test_down_removes_every_resource(arm: Arm) -> None:
    t = small()
    deploy(arm, t)
    d = AzureDeployment(SUB, "rg-rh", credential=Credential(), **arm.kwargs())
    d.destroy(t)
    assert arm.engine.resources == {}


def test_a_bad_token_is_refused(arm: Arm) -> None:
    d = AzureDeployment(SUB, "rg-rh", credential=Credential("forged"), **arm.kwargs())
    with pytest.raises(AzureError, match="InvalidAuthenticationToken|Unauthorized"):
        d.deploy(small(), SECRETS)


def test_rdma_node_sets_follow_azures_placement_rules(arm: Arm, tmp_path: Path) -> None:
    """Finding 1: VMs join only Flexible sets with singlePlacementGroup false, and InfiniBand
    is not supported in Flexible orchestration. An RDMA node set is a Uniform scale set with a
    single placement group whose instances Azure names; the head names each one's node."""
    from cloudhpc.azure.uniform import Assignments

    t = small(rdma=True)
    deploy(arm, t)
    vmss = next(r for r in arm.engine.resources.values() if r["name"] == "rh-hb-vmss")
    assert vmss["properties"]["orchestrationMode"] == "Uniform"
    assert vmss["properties"]["singlePlacementGroup"] is True
    plan = make_plan(t.model_copy(update={"provider": "azure"}))
    names = tmp_path / "names"
    provider = AzureProvider(t, plan, SUB, "rg-rh", credential=Credential(), secrets=SECRETS,
                             assignments=Assignments(tmp_path / "a.json", names),
                             **arm.kwargs())
    hb = [plan.node("hb-1"), plan.node("hb-2")]
    assert provider.launch(hb) == []  # type: ignore[arg-type]
    instances = arm.engine.instances(vmss["id"])
    assert len(instances) == 2
    computers = sorted(i["properties"]["osProfile"]["computerName"] for i in instances)
    assert computers == ["hb-000000", "hb-000001"]
    assert sorted(p.read_text().strip() for p in names.iterdir()) == ["hb-1", "hb-2"]
    # addresses from the RDMA subnet, which the plan's named VMs never use
    nics = [r for r in arm.engine.resources.values() if r["id"].lower().startswith(
        vmss["id"].lower() + "/virtualmachines/") and r["type"].endswith("networkInterfaces")]
    assert all(n["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
               .startswith("10.40.1.") for n in nics)
    assert provider.nodes()["hb-1"].state.value == "running"
    provider.terminate(["hb-1"])
    assert [i["instanceId"] for i in arm.engine.instances(vmss["id"])] == ["1"]
    assert provider.nodes()["hb-1"].state.value == "absent"
    assert sorted(p.name for p in names.iterdir()) == ["hb-000001"]


def _engine_preflight(arm: Arm, template: dict[str, Any]) -> ArmError:
    did = f"/subscriptions/{SUB}/resourceGroups/rg-rh/providers/Microsoft.Resources/" \
          "deployments/x"
    arm.engine.put_group(SUB, "rg-rh", {"location": "eastus"})
    params = {k: {"value": v} for k, v in SECRETS.items()}
    with pytest.raises(ArmError) as info:
        arm.engine.start_deployment(did, {"properties": {"template": template,
                                                         "parameters": params}})
    return info.value


def _vm(arm_template: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in arm_template["resources"]
                if r["type"] == "Microsoft.Compute/virtualMachines" and r["name"] == name)


@pytest.mark.parametrize("breakage,expected", [
    (lambda a: _vm(a, "rh-cn-1")["properties"]["osProfile"]["linuxConfiguration"].update(
        ssh={"publicKeys": []}), "Authentication using either SSH"),
    (lambda a: _vm(a, "rh-cn-1")["properties"]["osProfile"]["linuxConfiguration"]["ssh"][
        "publicKeys"][0].update(path="/home/azureuser/.ssh/authorized_keys"),
     "is not /home/"),
    (lambda a: next(r for r in a["resources"] if r["name"] == "rh-cn-1-nic")["properties"][
        "ipConfigurations"][0]["properties"].update(privateIPAddress="10.40.0.2"),
     "reserved by Azure"),
    (lambda a: next(r for r in a["resources"] if r["name"] == "rh-cn-1-nic")["properties"][
        "ipConfigurations"][0]["properties"].update(privateIPAddress="10.40.0.4"),
     "already used"),
    (lambda a: _vm(a, "rh-cn-1").update(dependsOn=[]), "without depending on it"),
    (lambda a: a["resources"].append(copy.deepcopy(a["resources"][0]) | {"name": "[bogus()]"}),
     "not valid"),
])
def test_azures_rules_refuse_a_broken_template(arm: Arm, breakage: Any,
                                               expected: str) -> None:
    template, _ = export(small())
    breakage(template)
    err = _engine_preflight(arm, template)
    assert expected in err.message or any(expected in d["message"] for d in err.details), \
        err.message


def test_a_contributor_cannot_deploy_the_role_assignment(arm: Arm) -> None:
    """Finding 5."""
    arm.engine.caller_role = "Contributor"
    template, _ = export(small())
    err = _engine_preflight(arm, template)
    assert err.code == "InvalidTemplateDeployment"
    assert "roleAssignments/write" in err.message


def test_a_nat_gateway_is_an_option_for_every_subnet(arm: Arm) -> None:
    """Finding 7: scale-set VMs have no default outbound access; the node image needs none,
    and a NAT gateway is there for what a user's jobs may need."""
    t = small(rdma=True, nat=True)
    deploy(arm, t)
    vnet = next(r for r in arm.engine.resources.values()
                if r["type"] == "Microsoft.Network/virtualNetworks")
    nat = next(r for r in arm.engine.resources.values()
               if r["type"] == "Microsoft.Network/natGateways")
    assert [s["properties"]["natGateway"]["id"] for s in vnet["properties"]["subnets"]] == [
        nat["id"], nat["id"]]


def test_a_vm_that_fails_after_it_was_accepted_is_reported_when_it_fails(
        arm: Arm, tmp_path: Path) -> None:
    """Finding 13: the power program waited for VM creation with a 120 s call timeout, so a
    failure that came later never reached Slurm. Now launch() returns once Azure accepted
    the requests, and a late failure (here AllocationFailed: the rehearsal's region has room
    for one more D4s_v5) is reported when it arrives."""
    t = small()
    deploy(arm, t)
    used = sum(1 for r in arm.engine.resources.values()
               if r["type"] == "Microsoft.Compute/virtualMachines")
    capacity = tmp_path / "capacity.json"
    capacity.write_text(json.dumps({"Standard_D4s_v5": used + 1}))
    arm.engine.capacity_file = capacity
    plan = make_plan(t.model_copy(update={"provider": "azure"}))
    provider = AzureProvider(t, plan, SUB, "rg-rh", credential=Credential(),
                             secrets=SECRETS, **arm.kwargs())
    late: list[Any] = []
    arrived = threading.Event()

    def report(error: Any) -> None:
        late.append(error)
        arrived.set()

    provider.on_failure(report)
    assert provider.launch([plan.node("cn-2"), plan.node("cn-3")]) == []  # type: ignore[list-item]
    assert arrived.wait(30), "the late failure was never reported"
    assert len(late) == 1 and late[0].nodes in (["cn-2"], ["cn-3"])
    assert "AllocationFailed" in late[0].cause and "\n" not in late[0].cause


def test_only_the_heads_identity_reaches_the_storage_account_and_only_that_one(
        arm: Arm, tmp_path: Path) -> None:
    """Finding 10 in the rehearsal: the deployment's Storage Blob Data Contributor makes the
    head's identity the one principal with data access, to its own account; the blob
    service (real Azurite, OAuth checked) refuses a token for another account, a token of an
    identity without a data role, and anonymous requests."""
    import socket

    from azure.core.credentials import AccessToken
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import BlobServiceClient

    from cloudhpc.rehearse import pki
    from cloudhpc.rehearse.blobs import BlobService
    from cloudhpc.rehearse.services import NO_DATA_ROLE, data_accounts, storage_token

    deploy(arm, small())
    account = next(r["name"] for r in arm.engine.resources.values()
                   if r["type"] == "Microsoft.Storage/storageAccounts")
    principal = next(r for r in arm.engine.resources.values() if r["type"] ==
                     "Microsoft.ManagedIdentity/userAssignedIdentities")["properties"]
    assert data_accounts(arm.engine, principal["principalId"]) == [account]
    assert data_accounts(arm.engine, "00000000-0000-0000-0000-000000000bad") == []

    ca, crt, key = pki.ensure(tmp_path / "blob-pki", ["127.0.0.1"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = BlobService(tmp_path, "127.0.0.1", crt, key, port)
    try:
        service.add(account)
        service.add("chpcother0000000")

        class Token:
            def __init__(self, text: str) -> None:
                self.text = text

            def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
                return AccessToken(self.text, int(time.time()) + 3600)

        def client(name: str, credential: Any) -> BlobServiceClient:
            return BlobServiceClient(f"https://127.0.0.1:{port}/{name}", credential=credential,
                                     connection_verify=str(ca), retry_total=0)

        expires = int(time.time()) + 600
        head = Token(storage_token(principal["principalId"], principal["tenantId"],
                                   data_accounts(arm.engine, principal["principalId"]),
                                   expires))
        client(account, head).create_container("data")
        assert [c.name for c in client(account, head).list_containers()] == ["data"]
        # what a job gets: a user delegation SAS for one blob, signed with the head's key
        from datetime import UTC, datetime, timedelta

        from azure.storage.blob import BlobClient, BlobSasPermissions, generate_blob_sas

        client(account, head).get_blob_client("data", "in.txt").upload_blob(b"staged")
        now = datetime.now(UTC)
        udk = client(account, head).get_user_delegation_key(now - timedelta(minutes=5),
                                                           now + timedelta(hours=1))
        sas = generate_blob_sas(account, "data", "in.txt", user_delegation_key=udk,
                                permission=BlobSasPermissions(read=True),
                                expiry=now + timedelta(hours=1))

        def blob(name: str) -> BlobClient:
            return BlobClient(f"https://127.0.0.1:{port}/{account}", "data", name,
                              credential=sas, connection_verify=str(ca), retry_total=0)

        assert blob("in.txt").download_blob().readall() == b"staged"
        with pytest.raises(HttpResponseError):  # the SAS names one blob: no other
            blob("other.txt").upload_blob(b"x")
        with pytest.raises(HttpResponseError):  # the other account: not the token's
            list(client("chpcother0000000", head).list_containers())
        stranger = Token(storage_token("bad", principal["tenantId"], [], expires))
        import base64
        payload = stranger.text.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert claims["aud"] == NO_DATA_ROLE
        with pytest.raises(HttpResponseError):  # an identity without a data role
            list(client(account, stranger).list_containers())
        with pytest.raises(HttpResponseError):  # nobody at all
            list(client(account, None).list_containers())
    finally:
        service.stop()
