"""ARM export, its linter, Azure validation and cost: pure logic, no Azure endpoint."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudhpc import cost
from cloudhpc.azure import cloudinit
from cloudhpc.azure.arm import API_VERSIONS, decode_custom_data, export
from cloudhpc.azure.lint import lint
from cloudhpc.plan import make_plan
from cloudhpc.slurm.conf import render_nodes
from cloudhpc.template import Level, Template
from cloudhpc.template.loader import check, load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "azure-hb.yaml"


@pytest.fixture()
def arm() -> dict[str, Any]:
    model, _ = load(EXAMPLE)
    return export(model)[0]


def by_type(arm: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [r for r in arm["resources"] if r["type"] == rtype]


def test_example_exports_a_template_that_passes_the_linter(arm: dict[str, Any]) -> None:
    assert lint(arm) == []
    types = {r["type"] for r in arm["resources"]}
    assert types == set(API_VERSIONS) - {"Microsoft.Network/natGateways"}  # an option


def test_rdma_node_set_gets_a_placement_group_and_min_nodes(arm: dict[str, Any]) -> None:
    sets = {r["name"]: r for r in by_type(arm, "Microsoft.Compute/virtualMachineScaleSets")}
    hb, serial = sets["hbdemo-hb-vmss"], sets["hbdemo-serial-vmss"]
    assert hb["sku"] == {"name": "Standard_HB120rs_v3", "tier": "Standard", "capacity": 0}
    # issue 14, finding 1: InfiniBand is not supported under Flexible orchestration; VMs
    # join only Flexible sets whose singlePlacementGroup is false
    assert hb["properties"]["orchestrationMode"] == "Uniform"
    assert hb["properties"]["singlePlacementGroup"] is True
    assert hb["properties"]["overprovision"] is False
    assert serial["properties"]["orchestrationMode"] == "Flexible"
    assert serial["properties"]["singlePlacementGroup"] is False
    assert "proximityPlacementGroups', 'hbdemo-hb-ppg'" in hb["properties"][
        "proximityPlacementGroup"]["id"]
    assert "proximityPlacementGroup" not in serial["properties"]


def test_min_nodes_are_named_members_of_their_scale_set_at_the_plans_address(
        arm: dict[str, Any]) -> None:
    """serial has min 1: serial-1 exists from the deployment, named after its Slurm node, at
    the address slurm.conf and /etc/hosts give it, in the serial scale set; hb (min 0) has
    no VM until Slurm asks for one."""
    model, _ = load(EXAMPLE)
    plan = make_plan(model.model_copy(update={"provider": "azure"}))
    vms = {r["name"]: r for r in by_type(arm, "Microsoft.Compute/virtualMachines")}
    assert set(vms) == {"hbdemo-head", "hbdemo-serial-1"}  # the cluster in Azure's names
    vm = vms["hbdemo-serial-1"]["properties"]
    assert vm["osProfile"]["computerName"] == "serial-1"
    assert "'hbdemo-serial-vmss'" in vm["virtualMachineScaleSet"]["id"]
    assert vm["hardwareProfile"]["vmSize"] == "Standard_D4s_v5"
    assert vms["hbdemo-serial-1"]["tags"]["cloudhpc-node"] == "serial-1"
    nics = {r["name"]: r for r in by_type(arm, "Microsoft.Network/networkInterfaces")}
    ipconf = nics["hbdemo-serial-1-nic"]["properties"]["ipConfigurations"][0]["properties"]
    address = plan.node("serial-1").address  # type: ignore[union-attr]
    assert (ipconf["privateIPAllocationMethod"], ipconf["privateIPAddress"]) == (
        "Static", address)
    conf = render_nodes(plan)
    assert f"NodeName=serial-1 NodeAddr={address} " in conf
    assert "hbdemo-serial-1-nic'" in vm["networkProfile"]["networkInterfaces"][0]["id"]
    # its bootstrap knows it as a compute node of serial
    text = base64.b64decode(decode_custom_data(vm["osProfile"]["customData"], {
        "mungeKey": "K", "clusterToken": "T"})).decode()
    config = json.loads(yaml.safe_load(text.split("\n", 1)[1])["write_files"][0]["content"])
    assert (config["role"], config["nodeset"]) == ("compute", "serial")


def test_network_security_and_storage_settings(arm: dict[str, Any]) -> None:
    rules = by_type(arm, "Microsoft.Network/networkSecurityGroups")[0]["properties"][
        "securityRules"]
    assert [(r["properties"]["destinationPortRange"], r["properties"]["sourceAddressPrefixes"])
            for r in rules] == [("22", ["203.0.113.0/24"]), ("8443", ["203.0.113.0/24"])]
    account = by_type(arm, "Microsoft.Storage/storageAccounts")[0]["properties"]
    assert account["supportsHttpsTrafficOnly"] is True
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["allowBlobPublicAccess"] is False
    role = by_type(arm, "Microsoft.Authorization/roleAssignments")[0]
    assert "scope" not in role  # deployed to the resource group: scoped to it, no wider
    assert role["name"].startswith("[guid(resourceGroup().id")


def test_the_head_uses_the_storage_account_through_its_identity_without_keys(
        arm: dict[str, Any]) -> None:
    """Issue 14, finding 10: the head's blob configuration pointed at the local emulator's
    address and the identity had no data role. Now: Shared Key refused, Storage Blob Data
    Contributor on that account only, the account's name in the head's custom data, and a
    service endpoint so every subnet (no way out by default) reaches storage."""
    account = by_type(arm, "Microsoft.Storage/storageAccounts")[0]["properties"]
    assert account["allowSharedKeyAccess"] is False
    roles = by_type(arm, "Microsoft.Authorization/roleAssignments")
    data = [r for r in roles if "ba92f5b4-2d11-453d-a403-e96b0029c9fe" in
            r["properties"]["roleDefinitionId"]]  # Storage Blob Data Contributor
    assert len(data) == 1
    assert data[0]["scope"] == ("[resourceId('Microsoft.Storage/storageAccounts', "
                                "variables('storageAccount'))]")
    assert data[0]["scope"] in data[0]["dependsOn"]
    assert "userAssignedIdentities', 'hbdemo-identity'" in data[0]["properties"]["principalId"]
    for subnet in by_type(arm, "Microsoft.Network/virtualNetworks")[0]["properties"]["subnets"]:
        assert subnet["properties"]["serviceEndpoints"] == [{"service": "Microsoft.Storage"}]
    values = {"mungeKey": "MK", "clusterToken": "CT", "storageAccount": "chpcabc123"}
    vms = {r["name"]: r for r in by_type(arm, "Microsoft.Compute/virtualMachines")}
    configs = {}
    for name, vm in vms.items():
        text = base64.b64decode(decode_custom_data(vm["properties"]["osProfile"]["customData"],
                                                   values)).decode()
        config = next(f for f in yaml.safe_load(text)["write_files"]
                      if f["path"] == cloudinit.CONFIG_PATH)
        configs[name] = json.loads(config["content"])
    assert configs["hbdemo-head"]["storage_account"] == "chpcabc123"
    assert "storage_account" not in configs["hbdemo-serial-1"]


def test_secrets_are_secure_parameters_and_custom_data_carries_them(
        arm: dict[str, Any]) -> None:
    params = arm["parameters"]
    for name in ("sshPublicKey", "mungeKey", "clusterToken"):
        assert params[name]["type"] == "securestring" and "defaultValue" not in params[name]
    head = by_type(arm, "Microsoft.Compute/virtualMachines")[0]
    expr = head["properties"]["osProfile"]["customData"]
    text = base64.b64decode(decode_custom_data(expr, {"mungeKey": "MK", "clusterToken": "CT"}))
    doc = yaml.safe_load(text.decode())
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    assert files["/etc/cloudhpc/munge.key.b64"] == "MK"
    assert files["/etc/cloudhpc/control.token"] == "CT"
    config = json.loads(files[cloudinit.CONFIG_PATH])
    assert config["role"] == "head" and config["template"]["name"] == "hbdemo"
    # the bootstrap is a systemd unit (it runs at every boot), started without blocking
    # cloud-final; nothing is installed at boot (the node image has it all)
    assert ["systemctl", "enable", "--now", "--no-block", "cloudhpc-node.service"] in \
        doc["runcmd"]
    assert f"ExecStart=/opt/cloudhpc/bin/python -m cloudhpc.node.cloudinit " \
           f"{cloudinit.CONFIG_PATH}\n" in files[cloudinit.UNIT_PATH]
    assert "packages" not in doc and "package_update" not in doc
    assert not any("pip" in " ".join(c) for c in doc["runcmd"])


def _mutations() -> list[tuple[str, Any, str]]:
    def dangling(a: dict[str, Any]) -> None:
        a["resources"][1]["dependsOn"].append(
            "[resourceId('Microsoft.Network/networkSecurityGroups', 'nope')]")

    def unused(a: dict[str, Any]) -> None:
        a["parameters"]["extra"] = {"type": "string"}

    def undeclared(a: dict[str, Any]) -> None:
        a["parameters"].pop("adminUsername")

    def literal_secret(a: dict[str, Any]) -> None:
        a["resources"][0]["properties"]["note"] = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ me"

    def plain_secret(a: dict[str, Any]) -> None:
        a["parameters"]["clusterToken"] = {"type": "string"}

    def default_secret(a: dict[str, Any]) -> None:
        a["parameters"]["mungeKey"]["defaultValue"] = "x"

    def old_api(a: dict[str, Any]) -> None:
        a["resources"][0]["apiVersion"] = "2019-01-01"

    def long_name(a: dict[str, Any]) -> None:
        a["resources"][0]["name"] = "n" * 90

    def bad_ref(a: dict[str, Any]) -> None:
        a["resources"][1]["properties"]["subnets"][0]["properties"][
            "networkSecurityGroup"]["id"] = ("[resourceId('Microsoft.Network/"
                                             "networkSecurityGroups', 'other')]")

    return [("dangling dependsOn", dangling, "names no resource"),
            ("unused parameter", unused, "declared but never used"),
            ("undeclared parameter", undeclared, "used but not declared"),
            ("secret literal", literal_secret, "looks like a secret"),
            ("secret as plain string", plain_secret, "not a securestring"),
            ("secret default", default_secret, "has a default value"),
            ("unpinned API", old_api, "is not the pinned"),
            ("name too long", long_name, "breaks Azure's rules"),
            ("reference to nothing", bad_ref, "does not declare")]


@pytest.mark.parametrize(("what", "mutate", "words"), _mutations(),
                         ids=[m[0] for m in _mutations()])
def test_linter_catches(arm: dict[str, Any], what: str, mutate: Any, words: str) -> None:
    broken = copy.deepcopy(arm)
    mutate(broken)
    problems = lint(broken)
    assert any(words in p for p in problems), (what, problems)


def _azure(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": 1, "name": "az", "provider": "azure", "network": {"cidr": "10.1.0.0/16"},
        "compute": [{"name": "hb", "size": "Standard_HB120rs_v3", "rdma": True, "max": 8}],
        "azure": {"region": "eastus", "ssh_cidrs": ["198.51.100.0/24"]}}
    for key, value in changes.items():
        if key == "compute":
            base["compute"][0].update(value)
        else:
            base["azure"].update(value) if value is not None else base.pop("azure")
    return base


@pytest.mark.parametrize(("data", "level", "path", "words"), [
    (_azure(azure=None), Level.ERROR, ("azure", "region"), "no Azure region"),
    (_azure(azure={"region": "estus"}), Level.WARNING, ("azure", "region"), "not one"),
    (_azure(compute={"max": 101}), Level.ERROR, ("compute", 0, "max"), "placement group"),
    (_azure(compute={"size": "Standard_D4s_v5"}), Level.ERROR, ("compute", 0, "size"),
     "no RDMA"),
    (_azure(azure={"ssh_cidrs": ["10.0.0.300/24"]}), Level.ERROR, ("azure", "ssh_cidrs", 0),
     "not a CIDR"),
    (_azure(azure={"image": "Debian:debian-12"}), Level.ERROR, ("azure", "image"),
     "PUBLISHER:OFFER:SKU:VERSION"),
    (_azure(azure={"admin_user": "root"}), Level.ERROR, ("azure", "admin_user"),
     "cannot be"),
    (_azure(compute={"rdma": False, "size": "Standard_D2s_v5", "min": 396, "max": 400}),
     Level.ERROR, ("compute",), "803 resources: Azure deploys at most 800"),
])
def test_azure_validation(data: dict[str, Any], level: Level, path: tuple[Any, ...],
                          words: str) -> None:
    _, findings = check(data)
    hits = [f for f in findings if f.path == path]
    assert hits and hits[0].level is level and words in hits[0].message, findings
    assert hits[0].hint


def test_the_most_static_nodes_validation_allows_fit_in_one_arm_template() -> None:
    model, findings = check(_azure(compute={"rdma": False, "size": "Standard_D2s_v5",
                                            "min": 394, "max": 400}))
    assert model is not None and not [f for f in findings if f.level is Level.ERROR]
    arm, _ = export(model)
    assert len(arm["resources"]) <= 800 and lint(arm) == []


def test_azure_checks_do_not_apply_to_local_clusters() -> None:
    data = _azure(azure=None, compute={"max": 200})
    data["provider"] = "local"
    data["network"]["cidr"] = "198.18.0.0/22"
    _, findings = check(data)
    assert not [f for f in findings if f.path and f.path[0] == "azure"]


def test_cost_of_the_example() -> None:
    model, _ = load(EXAMPLE)
    est = cost.estimate(model)
    table = cost.prices()
    head = table.per_hour["Standard_D8s_v5"]
    at_min = head + 1 * table.per_hour["Standard_D4s_v5"]
    at_max = head + 2 * table.per_hour["Standard_HB120rs_v3"] + 3 * table.per_hour[
        "Standard_D4s_v5"]
    assert est["hourly_at_min"] == pytest.approx(at_min)
    assert est["hourly_at_max"] == pytest.approx(at_max)
    assert est["monthly_at_min"] == pytest.approx(at_min * 730, abs=0.01)
    assert est["unpriced"] == []
    assert table.date and table.source


def test_every_size_has_a_price() -> None:
    from cloudhpc import sizes
    assert set(sizes.table()) <= set(cost.prices().per_hour)


def test_job_cost_from_node_seconds() -> None:
    node_seconds, usd = cost.job_cost(["Standard_HB120rs_v3"] * 2, 1800)
    assert node_seconds == 3600
    assert usd == pytest.approx(2 * 3.6 / 2)


def test_template_model_accepts_the_example() -> None:
    model = Template.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    assert model.azure.region == "eastus"


def test_azure_plan_skips_the_addresses_azure_keeps(arm: dict[str, Any]) -> None:
    from cloudhpc.plan import make_plan
    model, _ = load(EXAMPLE)
    plan = make_plan(model)
    assert plan.head.address == "10.42.0.4"  # .1-.3 belong to Azure
    assert min(int(n.address.split(".")[-1]) for n in plan.nodes if n.address.startswith(
        "10.42.0.")) == 4
    nic = by_type(arm, "Microsoft.Network/networkInterfaces")[0]
    conf = nic["properties"]["ipConfigurations"][0]["properties"]
    assert (conf["privateIPAllocationMethod"], conf["privateIPAddress"]) == ("Static",
                                                                             "10.42.0.4")


def test_the_head_shares_shared_and_homes_with_the_other_vms_over_nfs() -> None:
    """Each VM has its own disk: the head exports the cluster's /shared directory and the
    users' homes to the cluster's subnet, and every other VM (compute, login) mounts them
    from the head's address at the same paths before it bootstraps (a job's directory, its
    output and its user's home are then on every node). Before, /home was each VM's own."""
    model, _ = load(EXAMPLE)
    shared, homes = cloudinit.shared_dir(model), cloudinit.homes_dir(model)
    assert shared == "/var/lib/cloudhpc/clusters/hbdemo/shared"
    assert homes == "/var/lib/cloudhpc/clusters/hbdemo/home"
    head = yaml.safe_load(cloudinit.user_data(model, "head"))
    exports = next(f for f in head["write_files"] if f["path"] == cloudinit.EXPORTS_PATH)
    rule = "10.42.0.0/22(rw,sync,no_subtree_check,root_squash)"  # a VM's root is nobody
    assert [line.split() for line in exports["content"].splitlines()] == [
        [shared, rule], [homes, rule]]
    assert head["runcmd"].index(["exportfs", "-ra"]) < len(head["runcmd"]) - 1
    head_address = make_plan(model.model_copy(update={"provider": "azure"})).head.address
    for role, nodeset in (("compute", "hb"), ("login", None)):
        vm = yaml.safe_load(cloudinit.user_data(model, role, nodeset))
        assert not any(f["path"] == cloudinit.EXPORTS_PATH for f in vm["write_files"])
        fstab = [c[2] for c in vm["runcmd"] if c[0] == "sh"]
        unit = next(f["content"] for f in vm["write_files"] if f["path"] == cloudinit.UNIT_PATH)
        for path in (shared, homes):
            # in fstab: mounted again after a reboot (finding 14)
            assert any(f"{head_address}:{path} {path} nfs vers=4.2,hard,_netdev" in line
                       for line in fstab), (role, fstab)
            # the bootstrap waits for both before it starts, at every boot
            assert f"until mountpoint -q {path} || mount {path}" in unit


def test_the_head_keeps_the_admins_home_under_the_cluster_homes(tmp_path: Path) -> None:
    """The cluster's homes are bound over /home on every VM: the home Azure made for the
    admin user (with the deployment's SSH key) is copied into them once, owner and modes
    kept, never over a home already there; a symlink in its place is not followed."""
    import os

    from cloudhpc.node.cloudinit import adopt_admin_home

    system, homes = tmp_path / "home", tmp_path / "cluster-home"
    ssh = system / "azureuser" / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "authorized_keys").write_text("ssh-ed25519 AAAA admin\n")
    os.chmod(ssh / "authorized_keys", 0o600)
    os.chmod(system / "azureuser", 0o750)
    os.chown(system / "azureuser", 1000, 1000)
    homes.mkdir()
    adopt_admin_home("azureuser", homes, system)
    copied = homes / "azureuser"
    assert (copied / ".ssh" / "authorized_keys").read_text() == "ssh-ed25519 AAAA admin\n"
    assert (copied.stat().st_uid, copied.stat().st_mode & 0o777) == (1000, 0o750)
    assert (copied / ".ssh" / "authorized_keys").stat().st_mode & 0o777 == 0o600
    (ssh / "authorized_keys").write_text("changed\n")
    adopt_admin_home("azureuser", homes, system)  # once: a home already there is kept
    assert (copied / ".ssh" / "authorized_keys").read_text() == "ssh-ed25519 AAAA admin\n"
    (system / "evil").symlink_to("/etc")
    adopt_admin_home("evil", homes, system)
    assert not (homes / "evil").exists()
    adopt_admin_home("nobody-here", homes, system)
    assert sorted(p.name for p in homes.iterdir()) == ["azureuser"]


def _big(sets: int, nodes: int) -> dict[str, Any]:
    return {"version": 1, "name": "big", "provider": "azure", "network": {"cidr": "10.0.0.0/8"},
            "azure": {"region": "eastus"}, "head": {"size": "Standard_D4s_v5"},
            "compute": [{"name": f"hb{i}", "size": "Standard_HB120rs_v3", "min": nodes,
                         "max": nodes} for i in range(sets)]}


@pytest.mark.parametrize(("sets", "nodes", "broken"), [
    (20, 20, "830 resources"),  # scale sets and NICs counted: what is rendered
    (160, 1, "at most 4 MB"),  # every VM's custom data names every node set
])
def test_limits_are_computed_from_the_rendered_template(sets: int, nodes: int,
                                                        broken: str) -> None:
    from cloudhpc.errors import TemplateError
    from cloudhpc.template import load

    with pytest.raises(TemplateError) as info:
        load(_big(sets, nodes))
    text = str(info.value) + info.value.hint
    assert broken in text and "learn.microsoft.com" in text


def test_limits_check_every_documented_rule() -> None:
    from cloudhpc.azure.limits import RULES, check

    assert all(r.reference.startswith("https://learn.microsoft.com/") for r in RULES)
    arm = {"resources": [{"type": "t", "name": "n", "properties": {
        "osProfile": {"customData": base64.b64encode(b"x" * 70_000).decode()}}}],
        "parameters": {f"p{i}": {} for i in range(257)}}
    problems = check(arm)
    assert any("custom data of 70,000 bytes" in p for p in problems)
    assert any("257 parameters" in p for p in problems)


def test_two_clusters_in_one_group_do_not_collide_and_down_leaves_no_disk() -> None:
    """Finding 15: VM, NIC and storage account names carry the cluster; finding 17: the
    head's OS disk and NIC go with the VM (deleteOption)."""
    from cloudhpc.template import load

    names = []
    for name in ("alpha", "beta"):
        model, _ = load({**_big(1, 2), "name": name})
        arm, _ = export(model)
        names.append({r["name"] for r in arm["resources"] if not r["name"].startswith("[")}
                     | {arm["variables"]["storageAccount"]})
        head = next(r for r in arm["resources"] if r["name"] == f"{name}-head")["properties"]
        assert head["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
        assert head["networkProfile"]["networkInterfaces"][0]["properties"][
            "deleteOption"] == "Delete"
    assert not names[0] & names[1]


def test_azure_nodes_declare_what_their_size_has() -> None:
    """Finding 11: local.cpu_cap (16) was applied on Azure: a 120-core HB node offered 16
    CPUs and no memory."""
    from cloudhpc.template import load

    model, _ = load(_big(1, 1))
    node = make_plan(model).node("hb0-1")
    assert node is not None and node.cpus == 120
    assert node.memory_mib == int(448 * 1024 * 0.95)  # Standard_HB120rs_v3: 448 GiB
    assert "CPUs=120 " in render_nodes(make_plan(model))


def test_compute_vms_get_no_control_token_and_the_head_runs_accounting() -> None:
    """Issue 14, finding 16: the control plane's token was written to every compute VM.
    The head's custom data holds it (and slurmdbd, MariaDB); a compute VM's does not."""
    model, _ = load(EXAMPLE)
    arm, _ = export(model)
    vms = {r["name"]: r for r in arm["resources"]
           if r["type"] == "Microsoft.Compute/virtualMachines"}
    for name, res in vms.items():
        data = res["properties"]["osProfile"]["customData"]
        is_head = "head" in str(name)
        assert ("parameters('clusterToken')" in data) is is_head, name
    head = yaml.safe_load(cloudinit.user_data(model, "head"))
    from cloudhpc.image.build import RECIPE  # the node image has them (nothing at boot)
    assert {"slurmdbd", "mariadb-server"} <= set(RECIPE.read_text().split())
    assert any(f["path"] == "/etc/cloudhpc/control.token" for f in head["write_files"])
    compute = yaml.safe_load(cloudinit.user_data(model, "compute", "hb"))
    assert not any("control.token" in f["path"] for f in compute["write_files"])


def test_azure_waits_minutes_for_vms_where_namespaces_wait_seconds() -> None:
    """Issue 14, finding 13: ResumeTimeout 120 s and SuspendTimeout 3 s were made for
    namespaces; on Azure a VM boots and installs for minutes (CycleCloud: 1800 and 600)."""
    from cloudhpc.slurm.conf import SlurmPaths, render

    model, _ = load(EXAMPLE)
    azure = render(make_plan(model.model_copy(update={"provider": "azure"})), SlurmPaths("/s"))
    assert "ResumeTimeout=1800" in azure and "SuspendTimeout=600" in azure
    local = render(make_plan(model.model_copy(update={"provider": "local"})), SlurmPaths("/s"))
    # the template names 900 s for one node set; the other takes the provider's default
    assert "ResumeTimeout=900" in local and "SuspendTimeout=3" in local


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "0.0.0.0/1", "::/0", "*", "Internet",
                                  "64.0.0.0/2"])
def test_a_head_open_to_the_internet_is_warned_about(cidr: str) -> None:
    """Issue 14, finding 16: 0.0.0.0/0 was accepted without a warning (and other spellings
    of the whole internet were never looked at)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["azure"]["api_cidrs"] = ["203.0.113.0/24", cidr]
    model, findings = check(data)
    warned = [f for f in findings if f.level is Level.WARNING and "internet" in f.message]
    assert warned and warned[0].path == ("azure", "api_cidrs", 1), findings


def test_rdma_clusters_build_on_azures_hpc_image_and_mpi_uses_the_infiniband_port(
        tmp_path: Path) -> None:
    """Finding 12: `rdma: true` changed nothing for MPI (TCP on a generic Debian image).
    RDMA clusters build their one node image (every VM, one Slurm) on Azure's HPC image, and
    a task on a node with an InfiniBand port gets Open MPI over UCX on that port."""
    import subprocess

    from cloudhpc.image.packer import _hcl
    from cloudhpc.slurm.conf import TASK_PROLOG
    from cloudhpc.template.schema import DEFAULT_IMAGE, HPC_IMAGE

    hb, _ = load(EXAMPLE)
    assert hb.azure.image == HPC_IMAGE
    hcl = _hcl(hb, "0" * 64)
    assert 'image_publisher                   = "microsoft-dsvm"' in hcl
    assert 'image_offer                       = "ubuntu-hpc"' in hcl
    plain = yaml.safe_load(EXAMPLE.read_text())
    plain["compute"] = [ns for ns in plain["compute"] if not ns.get("rdma")]
    assert load(plain)[0].azure.image == DEFAULT_IMAGE
    chosen = yaml.safe_load(EXAMPLE.read_text())
    chosen["azure"]["image"] = DEFAULT_IMAGE  # named: kept, and warned about
    model, findings = check(chosen)
    assert model is not None and model.azure.image == DEFAULT_IMAGE
    assert any(f.path == ("azure", "image") and f.level is Level.WARNING and
               "InfiniBand" in f.message for f in findings), findings

    sysfs = tmp_path / "infiniband"
    for dev, layer in (("mlx5_an0", "Ethernet"), ("mlx5_ib0", "InfiniBand")):
        (sysfs / dev / "ports" / "1").mkdir(parents=True)
        (sysfs / dev / "ports" / "1" / "link_layer").write_text(layer + "\n")
    script = TASK_PROLOG.replace("/sys/class/infiniband", str(sysfs))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    assert "export OMPI_MCA_pml=ucx" in out and "UCX_NET_DEVICES=mlx5_ib0:1" in out
    (sysfs / "mlx5_ib0" / "ports" / "1" / "link_layer").write_text("Ethernet\n")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    assert "ucx" not in out.lower() and "OMPI_ALLOW_RUN_AS_ROOT=1" in out  # TCP stays


def test_login_nodes_are_vms_at_the_top_of_the_network_without_identity() -> None:
    """Issue 13, item 5 on Azure: a login node set is plain VMs (no managed identity, no
    control token, no Slurm daemon), at addresses from the network's end, with a public IP;
    the compute nodes' addresses do not move."""
    data = yaml.safe_load(EXAMPLE.read_text())
    without = make_plan(load(copy.deepcopy(data))[0])
    data["login"] = [{"name": "login", "count": 2}]
    model, _ = load(data)
    plan = make_plan(model)
    assert [(n.name, n.address) for n in plan.login()] == [("login-1", "10.42.3.254"),
                                                            ("login-2", "10.42.3.253")]
    assert {n.name: n.address for n in without.compute()} == \
        {n.name: n.address for n in plan.compute()}
    arm = export(model)[0]
    vms = {r["name"]: r for r in by_type(arm, "Microsoft.Compute/virtualMachines")}
    login = vms["hbdemo-login-1"]
    assert "identity" not in login
    assert login["properties"]["osProfile"]["computerName"] == "login-1"
    text = base64.b64decode(decode_custom_data(login["properties"]["osProfile"]["customData"],
                                               {"mungeKey": "MK", "clusterToken": "CT"}))
    doc = yaml.safe_load(text)
    paths = [f["path"] for f in doc["write_files"]]
    assert "/etc/cloudhpc/control.token" not in paths
    config = json.loads(next(f["content"] for f in doc["write_files"]
                             if f["path"] == cloudinit.CONFIG_PATH))
    assert config["role"] == "login"
    nics = {r["name"]: r for r in by_type(arm, "Microsoft.Network/networkInterfaces")}
    ipconf = nics["hbdemo-login-1-nic"]["properties"]["ipConfigurations"][0]["properties"]
    assert ipconf["privateIPAddress"] == "10.42.3.254" and "publicIPAddress" in ipconf
    assert lint(arm) == []


def test_login_set_names_must_not_clash() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["login"] = [{"name": "hb"}]
    _, findings = check(data)
    assert any(f.path == ("login", 0, "name") and "duplicate" in f.message for f in findings)
    full = {"version": 1, "name": "full", "network": {"cidr": "198.19.99.0/28"},
            "compute": [{"name": "c", "size": "Standard_D2s_v5", "max": 11}],
            "login": [{"name": "login"}]}
    _, findings = check(full)
    assert any(f.path == ("login",) and "no room" in f.message for f in findings), findings
    full["compute"][0]["max"] = 10
    _, findings = check(full)
    assert not [f for f in findings if f.level is Level.ERROR], findings
