"""`cloudhpc up TEMPLATE --rehearse` and its `down`: the Azure deployment of a template acted
out on this machine. The same code path as `up` on Azure (the exported ARM template, the Azure
SDK, the same parameters), pointed at the rehearsal's Resource Manager; the node image is
built here from the recipe Packer runs on Azure and registered in the resource group as the
managed image Packer would have left."""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken

from cloudhpc.azure import service
from cloudhpc.azure.deploy import CREATED_TAG
from cloudhpc.errors import CloudHPCError
from cloudhpc.image import build
from cloudhpc.plan import API_PORT, make_plan
from cloudhpc.rehearse import daemon
from cloudhpc.rehearse.vms import Sandbox
from cloudhpc.secretfile import write_secret
from cloudhpc.state import ClusterRecord, Store
from cloudhpc.template.schema import Template

Say = Callable[[str], None]
IMAGE_API = "2023-09-01"


class RehearsalCredential:
    """The CLI's token for the rehearsal's Resource Manager (azure-core's TokenCredential)."""

    def __init__(self) -> None:
        self.token = daemon.cli_token()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def is_rehearsal(record: ClusterRecord) -> bool:
    return bool((record.template.get("azure") or {}).get("subscription") == daemon.SUBSCRIPTION)


def target(t: Template) -> Template:
    azure = t.azure.model_copy(update={
        "subscription": daemon.SUBSCRIPTION, "region": t.azure.region or "eastus",
        "resource_group": t.azure.resource_group or f"cloudhpc-{t.name}"})
    return t.model_copy(update={"azure": azure, "provider": "azure"})


def ssh_key() -> Path:
    """The rehearsal's admin key pair (an ed25519 key made once)."""
    pub = daemon.root() / "admin_ed25519.pub"
    if not pub.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        key = ed25519.Ed25519PrivateKey.generate()
        write_secret(daemon.root() / "admin_ed25519", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()))
        pub.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) +
            b" cloudhpc-rehearsal\n")
    return pub


def _clients() -> tuple[Any, dict[str, Any]]:
    from azure.mgmt.resource import ResourceManagementClient

    kwargs = daemon.client_kwargs()
    client = ResourceManagementClient(RehearsalCredential(), daemon.SUBSCRIPTION, **kwargs)
    return client, kwargs


def register_image(t: Template, image: build.Image) -> str:
    """The node image as a managed image in the cluster's group; returns its id."""
    assert t.azure.resource_group
    client, _ = _clients()
    client.resource_groups.create_or_update(t.azure.resource_group, {
        "location": t.azure.region, "tags": {CREATED_TAG: "true", "cloudhpc-cluster": t.name}})
    rid = (f"/subscriptions/{daemon.SUBSCRIPTION}/resourceGroups/{t.azure.resource_group}/"
           f"providers/Microsoft.Compute/images/cloudhpc-{image.sha256[:16]}")
    client.resources.begin_create_or_update_by_id(rid, IMAGE_API, {
        "location": t.azure.region, "tags": {"cloudhpc-wheel-sha256": image.sha256},
        "properties": {"hyperVGeneration": "V2", "storageProfile": {
            "osDisk": {"osType": "Linux", "osState": "Generalized"}}}}).result()
    return rid


def head_sandbox(t: Template) -> Sandbox:
    from cloudhpc.rehearse.platform import VmPlatform

    platform = VmPlatform(daemon.root(), daemon.root() / "platform")
    for box in platform.running():
        if box.spec.hostname == "head" and box.spec.vm_id.endswith(f"/{t.name}-head"):
            return box
    raise CloudHPCError(f"the rehearsal has no head VM for {t.name}",
                        hint=f"run `cloudhpc up TEMPLATE --rehearse` for {t.name}")


def wait_head_ready(t: Template, timeout: float = 600) -> float:
    """Until the head's REST API answers /healthz over HTTPS; returns the seconds waited."""
    address = make_plan(t).head.address
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # made on the VM; pinned by its file below
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(f"https://{address}:{API_PORT}/healthz", context=context,
                                        timeout=3) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(1)
    raise CloudHPCError(f"the head of {t.name} did not answer on https://{address}:{API_PORT} "
                        f"within {timeout:.0f} s",
                        hint="see `cloudhpc rehearse console head -c NAME`")


def set_capacity(capacity: dict[str, int]) -> None:
    """How many VMs of each size the rehearsal's region can allocate (read at each VM's
    creation; the next fails late with AllocationFailed)."""
    import json

    path = daemon.root() / "capacity.json"
    if capacity:
        path.write_text(json.dumps(capacity))
    else:
        path.unlink(missing_ok=True)


def up(t: Template, store: Store, say: Say,
       capacity: dict[str, int] | None = None) -> dict[str, Any]:
    t = target(t)
    set_capacity(capacity or {})
    image = build.build(say)
    say("starting the rehearsal's Azure stand-in")
    daemon.ensure_running()
    image_id = register_image(t, image)
    say("deploying the ARM template")
    _, kwargs = _clients()
    outputs = service.up(t, store, str(ssh_key()), credential=RehearsalCredential(),
                         image_id=image_id, poll_seconds=1, **kwargs)
    say("waiting for the head's API (cloud-init, then the node bootstrap)")
    outputs["headReadySeconds"] = round(wait_head_ready(t), 1)
    return outputs


def down(record: ClusterRecord, store: Store) -> list[str]:
    daemon.ensure_running()
    _, kwargs = _clients()
    removed = service.down(record, store, credential=RehearsalCredential(), **kwargs)
    if not [r for r in store.clusters() if is_rehearsal(r)]:
        daemon.stop_all()  # nothing rehearsed is left: no process, bridge or address
    return removed
